#!/bin/sh
# base-images.sh ref     -- print the FROM reference to build with: reference@digest once
#                           docker/base-images.lock holds the digest, else the bare tag
# base-images.sh verify  -- make sure the base image is here and is the recorded one:
#                           pull reference@digest (the registry serves exactly those bytes)
#                           or, while the digest is `unresolved`, pull the tag and record
#                           its digest in the lock (trust on first use; commit the change)
# LOCK=path overrides the lock file (tests).
set -eu
lock=${LOCK:-$(dirname "$0")/base-images.lock}
row=$(awk '!/^[[:space:]]*(#|$)/ { print $1, $2; exit }' "$lock")
ref=${row%% *}
digest=${row#* }
if [ -z "$row" ] || [ "$ref" = "$digest" ]; then
    echo "base-images: no 'reference digest' row in $lock" >&2
    exit 1
fi
if [ "$digest" = unresolved ]; then
    pinned=no
elif printf '%s\n' "$digest" | grep -Eq '^sha256:[0-9a-f]{64}$'; then
    pinned=yes
else
    echo "base-images: digest '$digest' in $lock is neither sha256:<64 hex> nor unresolved" >&2
    exit 1
fi
case ${1:-} in
    ref)
        if [ $pinned = yes ]; then echo "$ref@$digest"; else echo "$ref"; fi
        ;;
    verify)
        if [ $pinned = yes ]; then
            docker pull "$ref@$digest"
            echo "base-images: $ref@$digest pulled (content-addressed: verified by digest)"
        else
            docker pull "$ref"
            got=$(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$ref" \
                  | awk -v r="${ref%%:*}" 'index($0, r "@sha256:") == 1 { sub(/^[^@]*@/, ""); print; exit }')
            if ! printf '%s\n' "$got" | grep -Eq '^sha256:[0-9a-f]{64}$'; then
                echo "base-images: could not read the registry digest of $ref" >&2
                exit 1
            fi
            tmp="$lock.tmp.$$"
            awk -v r="$ref" -v d="$got" '$1 == r && $2 == "unresolved" { sub(/unresolved/, d) } { print }' \
                "$lock" > "$tmp" && mv "$tmp" "$lock"
            echo "base-images: RECORDED $ref -> $got in $lock (first use). Commit it:" >&2
            echo "    git commit -m 'Record base image digest' $lock" >&2
        fi
        ;;
    *)
        echo "usage: base-images.sh ref|verify" >&2
        exit 2
        ;;
esac
