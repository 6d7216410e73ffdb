"""VOD AI job tracker."""
