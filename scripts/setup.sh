#!/usr/bin/env bash
# Installs what building strongbox needs on a fresh Debian machine:
# libclang (RocksDB's bindings), a C++ compiler, and protoc for the etcd
# client the benchmark uses (strongbox's own protos use a vendored protoc).
set -euo pipefail
need=()
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
dpkg -s g++ >/dev/null 2>&1 || need+=(g++)
dpkg -s make >/dev/null 2>&1 || need+=(make)
dpkg -s protobuf-compiler >/dev/null 2>&1 || need+=(protobuf-compiler)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
