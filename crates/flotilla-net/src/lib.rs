//! flotilla-net (under construction).
