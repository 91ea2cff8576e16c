#!/usr/bin/env bash
# Installs what building divert-webhook needs besides Rust, on Debian or Ubuntu: Google RE2's
# headers and static library (libre2-dev; build.rs links it, SPEC §7) and a C++ compiler (g++)
# for the shim in csrc/. Does nothing when they are there already; otherwise needs root
# (apt-get) or sudo.
set -euo pipefail

missing=()
# RE2: its header and static library, where Debian's libre2-dev puts them (any architecture).
if ! compgen -G '/usr/include/re2/re2.h' >/dev/null || ! compgen -G '/usr/lib/*/libre2.a' >/dev/null; then
  missing+=(libre2-dev)
fi
if ! command -v g++ >/dev/null 2>&1; then
  missing+=(g++)
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-build-deps.sh: need ${missing[*]} (Debian package names), and this system has no apt-get;" \
    "install RE2's headers, its static library libre2.a and a C++ compiler with your package manager" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "install-build-deps.sh: need ${missing[*]}: run as root, or apt-get install ${missing[*]}" >&2
    exit 1
  fi
  sudo=(sudo)
fi
echo "install-build-deps.sh: installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
