pub mod cluster;
pub mod secrets;
