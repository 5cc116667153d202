#!/usr/bin/env bash
# Installs the Debian packages svcwrap's tests and demo use, if any is missing:
#   netcat-openbsd (nc), dnsutils (dig), curl, supervisor (supervisord),
#   util-linux (unshare), procps (ps, pgrep), dnsmasq-base (dnsmasq),
#   systemd (systemd-analyze, which checks the example units; nothing boots it),
#   bash-completion (the completion test), man-db (man, which renders svcwrap.1).
# As root it runs apt-get; otherwise it uses `sudo -n` when that needs no
# password (CI runners), else prints what to install and exits 1.
# Quick and silent apart from one line when everything is there.
set -euo pipefail

packages=(netcat-openbsd dnsutils curl supervisor util-linux procps dnsmasq-base systemd bash-completion man-db)

missing=()
if command -v dpkg-query >/dev/null; then
	for p in "${packages[@]}"; do
		if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]]; then
			missing+=("$p")
		fi
	done
else
	# Not Debian: check the commands instead and let the user find the packages.
	declare -A provides=([netcat-openbsd]=nc [dnsutils]=dig [curl]=curl [supervisor]=supervisord [util-linux]=unshare [procps]=ps [dnsmasq-base]=dnsmasq [systemd]=systemd-analyze [bash-completion]=bash [man-db]=man)
	for p in "${packages[@]}"; do
		command -v "${provides[$p]}" >/dev/null || missing+=("$p")
	done
	if ((${#missing[@]})); then
		echo "deps: missing commands from: ${missing[*]} (no dpkg here: install them with your package manager)" >&2
		exit 1
	fi
fi

if ((${#missing[@]} == 0)); then
	echo "deps: all present (${packages[*]})"
	exit 0
fi

if ((EUID == 0)); then
	sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
	sudo=(sudo -n)
else
	echo "deps: missing Debian packages: ${missing[*]}" >&2
	echo "deps: install them as root with: apt-get install -y --no-install-recommends ${missing[*]}" >&2
	exit 1
fi

echo "deps: installing ${missing[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
