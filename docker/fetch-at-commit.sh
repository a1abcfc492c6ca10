#!/bin/sh
# fetch-at-commit.sh REPO_URL COMMIT DEST -- the only way upstream code enters an image:
# fetch exactly COMMIT (a full 40-hex object name, never a branch, tag or short hash) of
# REPO_URL into DEST, check that HEAD is that commit, drop the .git folder.
set -eu
url=${1:?usage: fetch-at-commit.sh REPO_URL COMMIT DEST}
commit=${2:?usage: fetch-at-commit.sh REPO_URL COMMIT DEST}
dest=${3:?usage: fetch-at-commit.sh REPO_URL COMMIT DEST}
case $commit in
    *[!0-9a-f]*) ok=no ;;
    *) [ ${#commit} -eq 40 ] && ok=yes || ok=no ;;
esac
if [ "$ok" != yes ]; then
    echo "fetch-at-commit: '$commit' is not a full 40-hex commit hash (branches, tags and short hashes are refused)" >&2
    exit 1
fi
if [ -e "$dest" ]; then
    echo "fetch-at-commit: $dest already exists" >&2
    exit 1
fi
trap 'rm -rf "$dest"' EXIT  # nothing half-fetched is left behind
git init -q "$dest"
git -C "$dest" fetch -q --depth 1 "$url" "$commit"
git -C "$dest" -c advice.detachedHead=false checkout -q FETCH_HEAD
head=$(git -C "$dest" rev-parse HEAD)
if [ "$head" != "$commit" ]; then
    echo "fetch-at-commit: $url gave $head, not $commit" >&2
    exit 1
fi
rm -rf "$dest/.git"
trap - EXIT
echo "fetch-at-commit: $url @ $commit -> $dest"
