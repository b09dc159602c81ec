//! The gRPC contract of strongbox, generated from `proto/`.

pub mod v1 {
    tonic::include_proto!("strongbox.v1");
}

pub mod raft {
    pub mod v1 {
        tonic::include_proto!("strongbox.raft.v1");
    }
}

/// Encoded descriptors of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("strongbox_descriptor");

pub mod leader;
