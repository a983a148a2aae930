//! Embedded adapters of Tributary's ports (SQLite for queues and tables, a directory for objects) and the local
//! runtime that turns HTTP requests and queue batches into the same Lambda events the real handlers receive.

pub mod dir_store;
pub mod dsr;
pub mod faults;
pub mod quarantine;
pub mod runtime;
pub mod sqlite_queue;
pub mod sqlite_table;
