//! flotilla-http (under construction).
