#!/usr/bin/env bash
# Captures the real lines dockerd prints when it fails to start (and the client
# TLS handshake lines it logs), for dockerd 20.10 (Debian 12's docker.io) and
# dockerd 26.1 (Debian 13's docker.io with its containerd 1.7), and writes them
# as the fixtures of tests/unit/test_dockerd_failures.py:
#
#   tests/unit/fixtures/dockerd_lines/20.10.txt
#   tests/unit/fixtures/dockerd_lines/26.1.txt
#
# and each version's `dockerd --help` (tests/unit/test_dockerd_flags.py) beside
# them, in ../dockerd_help/VERSION.txt.
#
# Usage (as root, on Debian 12):  scripts/capture_dockerd_failures.sh [OUT_DIR]
#   OUT_DIR defaults to tests/unit/fixtures/dockerd_lines; the full logs of every
#   run go to $WORK/raw (WORK defaults to /tmp/dockerd-capture) for reading.
#
# How: Debian 13's docker.io and containerd are downloaded with apt-get through
# a temporary apt configuration that points at the trixie suite of the mirror
# this machine already uses (read from its apt sources), and unpacked (not
# installed) under $WORK/trixie. Every scenario runs in its own private
# namespace (unshare --pid --fork --mount --net --mount-proc) with fresh tmpfs
# folders bound over /var/lib/docker, /run, /etc/docker and /certs, so the
# machine's own dockerd paths are never touched; when the scenario's shell (the
# namespace's PID 1) ends, the kernel ends whatever it left running, and its
# mounts go with the namespace.
#
# Each fixture block starts with "# scenario: NAME category=CATEGORY" and holds
# the lines that scenario produced which the failure table must explain: plain
# (non-logrus) lines, logrus lines at level error or fatal (minus the generic
# noise listed in NOISE below), the first warnings that carry a cause
# (WARN_KEEP), and the client handshake lines. Category "none": lines that are
# not failures (the table must not explain them).
set -euo pipefail

SELF=$(readlink -f "$0")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)
WORK=${WORK:-/tmp/dockerd-capture}
TIMEOUT=${TIMEOUT:-40}

# Error lines that appear in failing and healthy runs alike; they explain nothing.
NOISE='level=error msg="(failed to mount overlay: no such device|AUFS was not found|Failed to built-in GetDriver graph)'
# Warnings that carry the cause of a failure reported later (the first 3 are kept);
# dialing warnings are ordinary while dockerd's own containerd starts, so they
# are kept only where containerd is the scenario.
WARN_KEEP='no space left on device'
WARN_KEEP_CONTAINERD='rror while dialing'

# ---------------------------------------------------------------------------
# Inside the namespace: one scenario. Prints dockerd's output on stdout.
# ---------------------------------------------------------------------------

ns_setup() {
	# one folder for every namespace: each mounts its own tmpfs over it, which
	# nobody outside sees
	S=$WORK/ns
	mount -t tmpfs -o size=256m tmpfs "$S"
	mkdir -p "$S"/lib "$S"/run "$S"/etc "$S"/certs "$S"/scratch
	mount --bind "$S/lib" /var/lib/docker
	mount --bind "$S/run" /run
	mount --bind "$S/etc" /etc/docker
	mount --bind "$S/certs" /certs
	ip link set lo up
}

make_certs() { # $1: folder; a CA, a server and a client certificate (docker:dind's layout)
	local d=$1
	mkdir -p "$d"/ca "$d"/server "$d"/client
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-subj "/CN=${2:-capture-ca}" -keyout "$d/ca/key.pem" -out "$d/ca/cert.pem" 2>/dev/null
	local who
	for who in server client; do
		openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$who" \
			-keyout "$d/$who/key.pem" -out "$d/$who/csr.pem" 2>/dev/null
		if [[ $who == server ]]; then
			printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$d/ext"
		else
			printf 'extendedKeyUsage=clientAuth\n' >"$d/ext"
		fi
		openssl x509 -req -in "$d/$who/csr.pem" -CA "$d/ca/cert.pem" -CAkey "$d/ca/key.pem" \
			-CAcreateserial -days 2 -extfile "$d/ext" -out "$d/$who/cert.pem" 2>/dev/null
		cp "$d/ca/cert.pem" "$d/$who/ca.pem"
	done
}

TLS_FLAGS=(--tlsverify --tlscacert=/certs/server/ca.pem --tlscert=/certs/server/cert.pem
	--tlskey=/certs/server/key.pem)

run_dockerd() { # dockerd until it exits (or TIMEOUT), output on stdout
	timeout -s TERM -k 5 "$TIMEOUT" dockerd "$@" 2>&1 || true
}

wait_ready() { # $1: dockerd's pid; up to 30 s for its unix socket to answer
	local i
	for i in $(seq 300); do
		curl -sf --unix-socket /run/docker.sock http://d/_ping >/dev/null 2>&1 && return 0
		kill -0 "$1" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

stop_dockerd() { # $1: pid
	kill -TERM "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

scenario() {
	local name=$1
	case $name in
	json_trailing_comma)
		echo '{"debug": true,}' >/etc/docker/daemon.json
		run_dockerd ;;
	json_missing_quote)
		printf '{\n  "debug": true,\n  "log-level: "info"\n}\n' >/etc/docker/daemon.json
		run_dockerd ;;
	json_truncated)
		printf '{"debug": true' >/etc/docker/daemon.json
		run_dockerd ;;
	json_top_level_array)
		echo '["debug"]' >/etc/docker/daemon.json
		run_dockerd ;;
	json_wrong_type)
		echo '{"debug": "yes"}' >/etc/docker/daemon.json
		run_dockerd ;;
	json_empty)
		# empty: accepted or not? (the bad storage driver then fails the start quickly)
		: >/etc/docker/daemon.json
		run_dockerd --storage-driver bogus ;;
	json_bom)
		# a UTF-8 byte order mark; the unknown key makes the start fail quickly either way
		printf '\xef\xbb\xbf{"not-an-option": 1}\n' >/etc/docker/daemon.json
		run_dockerd ;;
	validate_ok)
		echo '{"debug": true}' >/etc/docker/daemon.json
		run_dockerd --validate ;;
	validate_bad)
		printf '{\n  "debug": true,\n}\n' >/etc/docker/daemon.json
		run_dockerd --validate ;;
	validate_clash)
		echo '{"hosts": ["unix:///run/other.sock"]}' >/etc/docker/daemon.json
		run_dockerd --validate -H unix:///run/docker.sock ;;
	json_other_file)
		echo '{"debug": true,}' >/certs/my-daemon.json
		run_dockerd --config-file /certs/my-daemon.json ;;
	json_unreadable)
		echo '{}' >/etc/docker/daemon.json
		# a folder where the file should be: read fails even as root
		run_dockerd --config-file /etc/docker ;;
	hosts_clash)
		echo '{"hosts": ["unix:///run/other.sock"]}' >/etc/docker/daemon.json
		run_dockerd -H unix:///run/docker.sock ;;
	tls_clash)
		make_certs /certs
		echo '{"tlsverify": true, "tlscert": "/certs/server/cert.pem"}' >/etc/docker/daemon.json
		run_dockerd -H unix:///run/docker.sock "${TLS_FLAGS[@]}" ;;
	data_root_clash)
		echo '{"data-root": "/var/lib/docker"}' >/etc/docker/daemon.json
		run_dockerd --data-root /var/lib/docker ;;
	unknown_key)
		echo '{"debug": true, "not-an-option": 1, "storage-driverr": "vfs"}' >/etc/docker/daemon.json
		run_dockerd ;;
	unknown_flag)
		run_dockerd --not-a-flag ;;
	storage_unknown)
		run_dockerd --storage-driver bogus ;;
	storage_wrong_fs)
		run_dockerd --storage-driver btrfs ;;
	overlay_on_overlay)
		mkdir -p "$S"/ov/lower "$S"/ov/upper "$S"/ov/work "$S"/ov/merged
		mount -t overlay overlay -o lowerdir="$S/ov/lower",upperdir="$S/ov/upper",workdir="$S/ov/work" \
			"$S/ov/merged"
		run_dockerd --data-root "$S/ov/merged" --storage-driver overlay2 ;;
	data_root_is_file)
		touch "$S/scratch/file"
		run_dockerd --data-root "$S/scratch/file" ;;
	data_root_read_only)
		mount -o remount,bind,ro /var/lib/docker
		run_dockerd ;;
	disk_full)
		mount -t tmpfs -o size=2m tmpfs /var/lib/docker
		dd if=/dev/zero of=/var/lib/docker/filler bs=64k 2>/dev/null || true
		run_dockerd ;;
	pidfile_live)
		echo 1 >/run/docker.pid  # PID 1 of this namespace: this shell, alive
		run_dockerd ;;
	tls_missing_files)
		run_dockerd -H unix:///run/docker.sock -H tcp://127.0.0.1:2376 "${TLS_FLAGS[@]}" ;;
	tls_bad_key_pair)
		make_certs /certs
		cp /certs/client/key.pem /certs/server/key.pem  # a key that is not the cert's
		run_dockerd -H unix:///run/docker.sock -H tcp://127.0.0.1:2376 "${TLS_FLAGS[@]}" ;;
	tls_bad_ca)
		make_certs /certs
		echo 'not a certificate' >/certs/server/ca.pem
		run_dockerd -H unix:///run/docker.sock -H tcp://127.0.0.1:2376 "${TLS_FLAGS[@]}" ;;
	port_busy)
		make_certs /certs
		python3 -c 'import socket,time; s=socket.socket(); s.bind(("127.0.0.1",2376)); s.listen(); time.sleep(300)' &
		sleep 0.5
		run_dockerd -H unix:///run/docker.sock -H tcp://127.0.0.1:2376 "${TLS_FLAGS[@]}" ;;
	iptables_denied)
		# no CAP_NET_ADMIN: the bridge and the NAT chain cannot be made
		setpriv --inh-caps=-net_admin --bounding-set=-net_admin \
			timeout -s TERM -k 5 "$TIMEOUT" dockerd 2>&1 || true ;;
	iptables_missing)
		mkdir -p "$S/bin"
		for tool in /usr/sbin/* /usr/bin/* /sbin/* /bin/*; do
			case ${tool##*/} in iptables* | ip6tables* | xtables*) continue ;; esac
			[[ -e $S/bin/${tool##*/} ]] || ln -s "$tool" "$S/bin/${tool##*/}"
		done
		PATH=${PATH%%:*}:$S/bin run_dockerd ;;
	containerd_bad_socket)
		run_dockerd --containerd /run/no-such-containerd.sock ;;
	containerd_stuck)
		# a containerd that never answers (as one stuck on a full or frozen disk)
		mkdir -p "$S/bin"
		printf '#!/bin/sh\nexec sleep 600\n' >"$S/bin/containerd"
		chmod +x "$S/bin/containerd"
		PATH=$S/bin:$PATH run_dockerd ;;
	handshakes)
		make_certs /certs
		make_certs "$S/other" other-ca
		dockerd -H unix:///run/docker.sock -H tcp://127.0.0.1:2376 "${TLS_FLAGS[@]}" \
			>"$S/dockerd.log" 2>&1 &
		local pid=$!
		if wait_ready "$pid"; then
			local c=/certs/client o=$S/other/client
			# a port probe: connect and close (EOF)
			python3 -c 'import socket; socket.create_connection(("127.0.0.1",2376)).close()'
			# plain HTTP on the TLS port
			curl -s -m 5 http://127.0.0.1:2376/_ping >/dev/null || true
			# no client certificate
			curl -s -m 5 --cacert $c/ca.pem https://127.0.0.1:2376/_ping >/dev/null || true
			# a client certificate from another CA
			curl -s -m 5 --cacert $c/ca.pem --cert $o/cert.pem --key $o/key.pem \
				https://127.0.0.1:2376/_ping >/dev/null || true
			# a client that does not trust the server's CA (it sends unknown_ca)
			curl -s -m 5 --cacert $o/ca.pem --cert $c/cert.pem --key $c/key.pem \
				https://127.0.0.1:2376/_ping >/dev/null || true
			# the same two over TLS 1.2, where the client's alert arrives in clear
			openssl s_client -connect 127.0.0.1:2376 -tls1_2 -CAfile $o/ca.pem -verify_return_error \
				-cert $c/cert.pem -key $c/key.pem </dev/null >/dev/null 2>&1 || true
			openssl s_client -connect 127.0.0.1:2376 -tls1_2 -CAfile $c/ca.pem -verify_return_error \
				-verify_hostname wrong.example -cert $c/cert.pem -key $c/key.pem \
				</dev/null >/dev/null 2>&1 || true
			# something that is neither TLS nor HTTP (an SSH client, a scanner)
			python3 -c 'import socket; s=socket.create_connection(("127.0.0.1",2376)); s.sendall(b"SSH-2.0-probe\r\n"); s.recv(100)' || true
			# a client that speaks only TLS 1.0/1.1
			openssl s_client -connect 127.0.0.1:2376 -tls1_1 </dev/null >/dev/null 2>&1 || true
			# a client whose name check fails (it sends bad_certificate)
			openssl s_client -connect 127.0.0.1:2376 -CAfile $c/ca.pem -verify_return_error \
				-verify_hostname wrong.example -cert $c/cert.pem -key $c/key.pem \
				</dev/null >/dev/null 2>&1 || true
			# a good client, for contrast (no line expected)
			curl -s -m 5 --cacert $c/ca.pem --cert $c/cert.pem --key $c/key.pem \
				https://127.0.0.1:2376/_ping >/dev/null || true
			sleep 0.5
		fi
		stop_dockerd "$pid"
		cat "$S/dockerd.log" ;;
	*)
		echo "unknown scenario $name" >&2
		return 2 ;;
	esac
}

# Each: scenario, the category of its lines, and where one version differs
# (20.10 refuses an empty daemon.json and has no --validate), VERSION=CATEGORY.
SCENARIOS=(
	"json_trailing_comma config" "json_missing_quote config" "json_truncated config"
	"json_top_level_array config" "json_wrong_type config" "json_empty storage 20.10=config"
	"json_bom config" "validate_ok none 20.10=config" "validate_bad config" "validate_clash config"
	"json_other_file config"
	"json_unreadable config" "hosts_clash config" "tls_clash config" "data_root_clash config"
	"unknown_key config" "unknown_flag config"
	"storage_unknown storage" "storage_wrong_fs storage" "overlay_on_overlay storage"
	"data_root_is_file storage" "data_root_read_only storage"
	"disk_full disk" "pidfile_live state"
	"tls_missing_files tls" "tls_bad_key_pair tls" "tls_bad_ca tls"
	"port_busy network" "iptables_denied network" "iptables_missing network"
	"containerd_bad_socket containerd" "containerd_stuck containerd"
	"handshakes client_handshake"
)

if [[ ${1:-} == --in-ns ]]; then
	# $2: a PATH prefix holding the dockerd to run; $3: the scenario
	export PATH=$2:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
	ns_setup
	scenario "$3"
	exit 0
fi

# ---------------------------------------------------------------------------
# Outside: fetch dockerd 26.1, run every scenario for both, write the fixtures.
# ---------------------------------------------------------------------------

OUT=${1:-$REPO/tests/unit/fixtures/dockerd_lines}
[[ $(id -u) == 0 ]] || { echo "run as root (namespaces, mounts)" >&2; exit 1; }

unique_messages() { # drop repeats of a logrus line that differ only in their time
	awk '{ key = $0; sub(/^time="[^"]*" /, "", key); if (!seen[key]++) print }'
}

debian_mirror() { # the first Debian archive URI in this machine's apt sources
	local uri
	uri=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list \
		/etc/apt/sources.list.d/*.list 2>/dev/null |
		grep -oE '(https?|file)://[^ ]+/debian/?( |$)' | grep -v security | head -n1 | tr -d ' ')
	[[ -n $uri ]] || { echo "no Debian mirror in this machine's apt sources" >&2; exit 1; }
	echo "$uri"
}

fetch_trixie() { # docker.io and containerd of Debian 13, unpacked under $WORK/trixie/root
	local apt=$WORK/trixie/apt root=$WORK/trixie/root
	[[ -x $root/usr/sbin/dockerd ]] && return 0
	mkdir -p "$apt"/etc/apt/sources.list.d "$apt"/etc/apt/preferences.d "$apt"/etc/apt/apt.conf.d \
		"$apt"/state/lists/partial "$apt"/cache/archives/partial "$WORK/trixie/debs"
	touch "$apt/state/status"
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(debian_mirror) trixie main" \
		>"$apt/etc/apt/sources.list"
	cat >"$apt/apt.conf" <<-EOF
		Dir::Etc "$apt/etc/apt";
		Dir::State "$apt/state";
		Dir::State::status "$apt/state/status";
		Dir::Cache "$apt/cache";
		APT::Sandbox::User "root";
	EOF
	APT_CONFIG=$apt/apt.conf apt-get update -qq
	(cd "$WORK/trixie/debs" && APT_CONFIG=$apt/apt.conf apt-get download -qq docker.io containerd)
	local deb
	for deb in "$WORK"/trixie/debs/*.deb; do dpkg-deb -x "$deb" "$root"; done
}

bin_dir() { # a folder for the front of PATH: dockerd and the helpers of one version
	local version=$1 dir=$WORK/bin/$1
	mkdir -p "$dir"
	if [[ $version == 26.1 ]]; then
		local root=$WORK/trixie/root tool
		for tool in usr/sbin/dockerd usr/sbin/docker-proxy usr/bin/containerd \
			usr/bin/containerd-shim-runc-v2 usr/bin/docker-init; do
			ln -sfn "$root/$tool" "$dir/${tool##*/}"
		done
		# trixie's runc needs a newer glibc than Debian 12's; dockerd only
		# reaches runc to run containers, which no scenario here does.
	else
		ln -sfn /usr/sbin/dockerd "$dir/dockerd"
	fi
	echo "$dir"
}

export WORK
mkdir -p "$WORK/ns" "$OUT"
fetch_trixie

for version in 20.10 26.1; do
	bin=$(bin_dir "$version")
	dockerd_version=$("$bin/dockerd" --version)
	raw=$WORK/raw/$version
	mkdir -p "$raw" "$OUT/../dockerd_help"
	"$bin/dockerd" --help >"$OUT/../dockerd_help/$version.txt" 2>&1 || true
	out=$OUT/$version.txt
	{
		echo "# Real output of $dockerd_version (containerd $("$(PATH=$bin:$PATH command -v containerd)" --version | awk '{print $3}'))"
		echo "# captured by scripts/capture_dockerd_failures.sh on $(date -u +%Y-%m-%d); each block names"
		echo "# the scenario (see that script for its inputs) and the category the table must give"
		echo "# its lines. Refresh with: scripts/capture_dockerd_failures.sh"
	} >"$out"
	for entry in "${SCENARIOS[@]}"; do
		# "NAME CATEGORY [VERSION=CATEGORY]": where one version answers otherwise
		read -r name category override <<<"$entry"
		[[ ${override:-} == "$version="* ]] && category=${override#*=}
		echo "$version: $name" >&2
		unshare --pid --fork --mount --net --mount-proc "$SELF" --in-ns "$bin" "$name" \
			>"$raw/$name.log" 2>&1 || true
		{
			echo
			echo "# scenario: $name category=$category"
			if [[ $name == handshakes ]]; then
				grep -a 'TLS handshake error' "$raw/$name.log" || true
			else
				# plain lines (not the shell's own job reports), errors, telling warnings
				grep -av '^time=' "$raw/$name.log" | grep -avE '^\s*$' | grep -avF "$SELF" || true
				grep -aE '^time=.* level=(error|fatal)' "$raw/$name.log" | grep -avE "$NOISE" |
					unique_messages || true
				keep=$WARN_KEEP
				[[ $name == containerd_* ]] && keep="$keep|$WARN_KEEP_CONTAINERD"
				grep -aE '^time=.* level=warning' "$raw/$name.log" | grep -aE "$keep" |
					unique_messages | head -n 3 || true
			fi
		} >>"$out"
	done
	echo "wrote $out" >&2
done
