#!/bin/sh
# fetch-verified.sh NAME DEST -- download the file docker/downloads.lock pins as NAME to
# DEST, and keep it only if its sha256 is the recorded one. Used by the Dockerfiles.
# LOCK=path overrides the lock file (tests). Exit 1 on any problem, with one message.
set -eu
name=${1:?usage: fetch-verified.sh NAME DEST}
dest=${2:?usage: fetch-verified.sh NAME DEST}
lock=${LOCK:-$(dirname "$0")/downloads.lock}
row=$(awk -v n="$name" '$1 == n { print $3, $4 }' "$lock")
if [ -z "$row" ]; then
    echo "fetch-verified: $name is not pinned in $lock" >&2
    exit 1
fi
sha=${row%% *}
url=${row#* }
case $sha in
    *[!0-9a-f]*) ok=no ;;
    *) [ ${#sha} -eq 64 ] && ok=yes || ok=no ;;
esac
if [ "$ok" != yes ]; then
    echo "fetch-verified: $name has no sha256 in $lock ('$sha'); refusing an unchecked download" >&2
    exit 1
fi
tmp="$dest.partial.$$"
trap 'rm -f "$tmp"' EXIT
curl -fsSL --retry 3 --connect-timeout 30 -o "$tmp" "$url"
got=$(sha256sum "$tmp" | cut -d' ' -f1)
if [ "$got" != "$sha" ]; then
    echo "fetch-verified: $name from $url has sha256 $got, $lock pins $sha; not used" >&2
    exit 1
fi
mv "$tmp" "$dest"
trap - EXIT
