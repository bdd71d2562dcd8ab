#!/usr/bin/env bash
# Shared by scripts/demo and scripts/test: install the Debian packages the build needs (only
# those missing), then configure and build with CMake + Ninja into build/ (Release).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config
  libboost-dev libboost-program-options-dev libboost-filesystem-dev libboost-system-dev
  libdnnl-dev ocl-icd-opencl-dev opencl-headers libyaml-cpp-dev doctest-dev nlohmann-json3-dev libicu-dev liburing-dev
  libvulkan-dev mesa-vulkan-drivers glslc
)

# ensure_packages PKG...: installs those not installed yet (apt-get, as root or with sudo)
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "==> installing Debian packages: ${missing[*]}"
  local SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
}
ensure_packages "${PACKAGES[@]}"

JOBS="${JOBS:-$(nproc)}"
echo "==> configuring ($BUILD_DIR)"
cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-} >/dev/null
echo "==> building with $JOBS jobs"
cmake --build "$BUILD_DIR" -j "$JOBS"
