#!/usr/bin/env bash
# A minimal Debian bookworm root filesystem with Python 3.11 for ARCH (amd64 | arm64), assembled
# without running one binary of ARCH: mmdebstrap downloads the packages and their dependencies
# from Debian's mirror and only *extracts* them (--variant=extract: no maintainer scripts, hence
# no emulation and no binfmt_misc). This script then does by hand the little that the maintainer
# scripts would have done for a Python service:
#   - merged /usr (bin, sbin, lib, and lib64 on amd64 -> usr/...), as bookworm expects
#   - /etc/passwd, /etc/group (root, nobody, hatswarm 10001), /etc/nsswitch.conf
#   - /etc/ssl/certs/ca-certificates.crt from Debian's ca-certificates (its data only: the
#     package's openssl + debconf + perl dependencies are not needed to read a PEM bundle)
#   - /var/lib/dpkg/status listing every extracted package, so image scanners (trivy, grype,
#     syft) see the Debian packages and their versions
# and drops documentation (copyright files stay), man pages, locales and glibc's gconv modules.
# There is no shell (dash/bash are not pulled in); tar is there (kubectl cp uses it).
#
#   images/rootfs.sh ARCH DIR [MIRROR]      # MIRROR default: $DEBIAN_MIRROR or deb.debian.org
#
# Needs mmdebstrap and dpkg-deb (apt-get install mmdebstrap), root, and Debian's mirror.
set -euo pipefail

if [[ "${1:-}" == --after-extract ]]; then  # mmdebstrap's extract hook (below) calls us back
  root="$2"
  # dpkg status from the archives mmdebstrap extracted (it keeps them until its cleanup)
  status="$root/var/lib/dpkg/status"
  : > "$status"
  for deb in "$root"/var/cache/apt/archives/*.deb; do
    dpkg-deb -f "$deb" | sed '/^Package:/a Status: install ok installed' >> "$status"
    echo >> "$status"
  done
  # the CA bundle, from the arch-independent ca-certificates package's data
  tmp="$(mktemp -d)"
  (cd "$tmp" && APT_CONFIG="${MMDEBSTRAP_APT_CONFIG:-${APT_CONFIG:-}}" apt-get download -q=2 -o APT::Sandbox::User=root ca-certificates)
  dpkg-deb -x "$tmp"/ca-certificates_*.deb "$tmp/x"
  mkdir -p "$root/etc/ssl/certs" "$root/usr/share/doc/ca-certificates"
  cat "$tmp"/x/usr/share/ca-certificates/mozilla/*.crt > "$root/etc/ssl/certs/ca-certificates.crt"
  cp "$tmp/x/usr/share/doc/ca-certificates/copyright" "$root/usr/share/doc/ca-certificates/"
  dpkg-deb -f "$tmp"/ca-certificates_*.deb | sed '/^Package:/a Status: install ok installed' >> "$status"
  echo >> "$status"
  rm -rf "$tmp"
  exit 0
fi

ARCH="${1:?usage: images/rootfs.sh ARCH DIR [MIRROR]}"
DIR="${2:?usage: images/rootfs.sh ARCH DIR [MIRROR]}"
MIRROR="${3:-${DEBIAN_MIRROR:-http://deb.debian.org/debian}}"
SUITE=bookworm
# python3.11-minimal + libpython3.11-stdlib: the interpreter and its standard library (ssl, sqlite,
# ctypes, ...). libstdc++6: onnxruntime and grpcio need it. netbase: /etc/services, /etc/protocols.
PACKAGES=python3.11-minimal,libpython3.11-stdlib,libstdc++6,netbase
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"

case "$ARCH" in amd64) links="bin sbin lib lib64" ;; arm64) links="bin sbin lib" ;;
  *) echo "rootfs.sh: ARCH is amd64 or arm64, not $ARCH" >&2; exit 2 ;; esac
command -v mmdebstrap >/dev/null || { echo "rootfs.sh: apt-get install -y mmdebstrap" >&2; exit 1; }

rm -rf "$DIR"
mmdebstrap ${MMDEBSTRAP_VERBOSE:---quiet} --variant=extract --mode=root --arch="$ARCH" --skip=check/qemu \
  --include="$PACKAGES" \
  --setup-hook="for d in $links; do mkdir -p \"\$1/usr/\$d\"; ln -s \"usr/\$d\" \"\$1/\$d\"; done" \
  --extract-hook="'$SELF' --after-extract \"\$1\"" \
  "$SUITE" "$DIR" "$MIRROR"

cat > "$DIR/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
hatswarm:x:10001:10001:hatswarm:/var/lib/hatswarm:/usr/sbin/nologin
EOF
cat > "$DIR/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
hatswarm:x:10001:
EOF
cat > "$DIR/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
shadow: files
hosts: files dns
networks: files
protocols: files
services: files
EOF
mkdir -p "$DIR/root" "$DIR/usr/lib/ssl"
chmod 0700 "$DIR/root"
# OpenSSL's default CA file (the openssl package would have made this link)
[[ -e "$DIR/usr/lib/ssl/cert.pem" ]] || ln -s /etc/ssl/certs/ca-certificates.crt "$DIR/usr/lib/ssl/cert.pem"

# what a service image does not need
find "$DIR/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
find "$DIR/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$DIR"/usr/share/{man,info,locale,lintian,bug,gcc,gdb} "$DIR"/usr/lib/*-linux-gnu/gconv \
  "$DIR"/var/cache/apt "$DIR"/var/lib/apt "$DIR"/var/log/* "$DIR"/etc/apt \
  "$DIR"/etc/{cron.daily,logrotate.d,hostname,resolv.conf,fstab} "$DIR"/dev/*
mkdir -p "$DIR/tmp" && chmod 1777 "$DIR/tmp"
echo "rootfs.sh: debian $SUITE $ARCH -> $DIR ($(du -sh "$DIR" | cut -f1)," \
  "$(grep -c '^Package:' "$DIR/var/lib/dpkg/status") packages)"
