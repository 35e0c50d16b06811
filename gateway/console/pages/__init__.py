"""One router per console page."""
