//! Embedded backend on redb (being written).
