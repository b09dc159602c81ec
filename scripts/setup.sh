#!/usr/bin/env bash
# Installs what building strongbox needs on a fresh Debian machine:
# libclang (RocksDB's bindings), a C++ compiler, and protoc for the etcd
# client the benchmark uses (strongbox's own protos use a vendored protoc),
# and iproute2, iptables and a font for the consistency harness.
set -euo pipefail
need=()
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
dpkg -s g++ >/dev/null 2>&1 || need+=(g++)
dpkg -s make >/dev/null 2>&1 || need+=(make)
dpkg -s protobuf-compiler >/dev/null 2>&1 || need+=(protobuf-compiler)
# The consistency harness (jepsen/): network namespaces, packet drops, and a
# font for its plots.
dpkg -s iproute2 >/dev/null 2>&1 || need+=(iproute2)
dpkg -s iptables >/dev/null 2>&1 || need+=(iptables)
dpkg -s fonts-dejavu-core >/dev/null 2>&1 || need+=(fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
