//! flotilla-store (under construction).
