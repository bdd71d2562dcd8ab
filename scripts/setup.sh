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

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

JOBS="${JOBS:-$(nproc)}"
echo "==> configuring ($BUILD_DIR)"
cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-} >/dev/null
echo "==> building with $JOBS jobs"
cmake --build "$BUILD_DIR" -j "$JOBS"
