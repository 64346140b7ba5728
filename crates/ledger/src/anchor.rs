//! The anchor (`HEAD`): the read side's format and reader (`log::anchor`), and the operator's
//! [`reanchor`].

pub use crate::anchor_writer::{reanchor, ReanchorError};
pub use log::anchor::*;
