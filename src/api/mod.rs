//! The FlexiAPI-compatible account API's transport-neutral half: JSON shapes, input
//! validation and operator actions shared by the HTTP routes and the CLI.

pub mod admin;
pub mod json;
pub mod validate;
