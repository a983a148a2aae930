//! Contract suites for the ports (feature `test-util`). Every adapter runs the same suite; if two adapters
//! disagree, the suite says which.
