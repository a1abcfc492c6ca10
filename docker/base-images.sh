#!/bin/sh
# base-images.sh ref [NAME]     -- print the FROM reference to build with for base NAME
#                                  (default: published): reference@digest once
#                                  docker/base-images.lock holds its digest, else the bare tag
# base-images.sh verify [NAME]  -- make sure base NAME (default: every base) is here and is
#                                  the recorded one: pull reference@digest (the registry
#                                  serves exactly those bytes) or, while the digest is
#                                  `unresolved`, pull the tag and record its digest in the
#                                  lock (trust on first use; commit the change)
# LOCK=path overrides the lock file (tests).
set -eu
lock=${LOCK:-$(dirname "$0")/base-images.lock}
cmd=${1:-}
names=$(awk '!/^[[:space:]]*(#|$)/ { print $1 }' "$lock")
if [ -z "$names" ]; then
    echo "base-images: no 'name reference digest' row in $lock" >&2
    exit 1
fi

row_of() { # row_of NAME -- "reference digest" of NAME, checked
    row=$(awk -v n="$1" '!/^[[:space:]]*(#|$)/ && $1 == n { print $2, $3; exit }' "$lock")
    ref=${row%% *}
    digest=${row#* }
    if [ -z "$row" ] || [ -z "$digest" ] || [ "$ref" = "$digest" ]; then
        echo "base-images: no row '$1 reference digest' in $lock" >&2
        exit 1
    fi
    if [ "$digest" = unresolved ]; then
        pinned=no
    elif printf '%s\n' "$digest" | grep -Eq '^sha256:[0-9a-f]{64}$'; then
        pinned=yes
    else
        echo "base-images: digest '$digest' of $1 in $lock is neither sha256:<64 hex> nor unresolved" >&2
        exit 1
    fi
}

verify_one() { # verify_one NAME
    row_of "$1"
    if [ $pinned = yes ]; then
        docker pull "$ref@$digest"
        echo "base-images: $ref@$digest pulled (content-addressed: verified by digest)"
        return
    fi
    docker pull "$ref"
    got=$(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$ref" \
          | awk -v r="${ref%%:*}" 'index($0, r "@sha256:") == 1 { sub(/^[^@]*@/, ""); print; exit }')
    if ! printf '%s\n' "$got" | grep -Eq '^sha256:[0-9a-f]{64}$'; then
        echo "base-images: could not read the registry digest of $ref" >&2
        exit 1
    fi
    tmp="$lock.tmp.$$"
    awk -v n="$1" -v d="$got" '$1 == n && $3 == "unresolved" { sub(/unresolved/, d) } { print }' \
        "$lock" > "$tmp" && mv "$tmp" "$lock"
    echo "base-images: RECORDED $ref -> $got in $lock (first use). Commit it:" >&2
    echo "    git commit -m 'Record base image digest' $lock" >&2
}

case $cmd in
    ref)
        row_of "${2:-published}"
        if [ $pinned = yes ]; then echo "$ref@$digest"; else echo "$ref"; fi
        ;;
    verify)
        if [ -n "${2:-}" ]; then
            verify_one "$2"
        else
            for n in $names; do verify_one "$n"; done
        fi
        ;;
    *)
        echo "usage: base-images.sh ref [NAME] | verify [NAME]" >&2
        exit 2
        ;;
esac
