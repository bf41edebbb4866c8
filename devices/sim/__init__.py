"""opmap."""
