//! (being written: the suppression list ingest, import and redrive check)
