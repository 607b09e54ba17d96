#!/usr/bin/env bash
# System tools the benchmark transport tests drive for real: the `adb` client (against
# tests/fake_adb_device.py), `sshd`/`ssh`/`ssh-keygen` (a private sshd on 127.0.0.1), and
# `timeout`/`pkill`/`taskset`, which remote commands use on the device side.
# Installs only what is missing; needs root (or sudo) and a Debian/Ubuntu apt.
set -euo pipefail
need=()
command -v adb >/dev/null 2>&1 || need+=(adb)
{ [ -x /usr/sbin/sshd ] || command -v sshd >/dev/null 2>&1; } || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v pkill >/dev/null 2>&1 || need+=(procps)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
command -v timeout >/dev/null 2>&1 || need+=(coreutils)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ci-system-deps: missing ${need[*]} and no apt-get; install them with your package manager" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo -n"
fi
echo "ci-system-deps: installing ${need[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
