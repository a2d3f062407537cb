//! flotilla (under construction).
