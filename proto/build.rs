fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc: no system package needed to build the contract.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("strongbox_descriptor.bin"))
        .compile_protos(&["strongbox/v1/strongbox.proto", "strongbox/raft/v1/raft.proto"], &["."])?;
    println!("cargo:rerun-if-changed=strongbox");
    Ok(())
}
