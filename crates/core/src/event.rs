//! PLACEHOLDER (helper replaces): typed Segment message model.
