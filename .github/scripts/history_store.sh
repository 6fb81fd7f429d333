#!/usr/bin/env bash
# The nightly's history store, kept as a one-commit branch: restored before `perfsuite history add`, pushed
# right after it. Lives here, not in the workflow, so tests/unit/test_workflows_history.py runs it against a
# local bare repository (first night, next night, a failed fetch).
#
#   history_store.sh restore  $HISTORY_BRANCH's store → $STORE, its commit (the lease) → $STORE.lease.
#                             No such branch (git ls-remote exit 2): the first night, a new store, an empty lease.
#                             Anything else (network, auth, a branch without the store): exit 1, no store —
#                             a fetch that failed is never read as "no history yet".
#   history_store.sh keep     $STORE as a one-commit branch, pushed with --force-with-lease=<the lease>: a branch
#                             that moved since restore (another writer) or appeared since (an empty lease) is
#                             refused, never overwritten.
#
# Environment: STORE and HISTORY_BRANCH (required); HISTORY_REMOTE (default origin); GH_TOKEN (optional: sent to
# $GITHUB_SERVER_URL, github.com by default, as an HTTP header through GIT_CONFIG_* variables — never on a command
# line, never in .git/config).
set -euo pipefail

STORE_IN_BRANCH=perfsuite-history.sqlite
remote=${HISTORY_REMOTE:-origin}
branch=${HISTORY_BRANCH:?HISTORY_BRANCH is not set}
store=${STORE:?STORE is not set}
lease_file="$store.lease"

basic=""
if [ -n "${GH_TOKEN:-}" ]; then
  basic=$(printf 'x-access-token:%s' "$GH_TOKEN" | base64 | tr -d '\n')
  echo "::add-mask::$basic"  # the header's value never shows in a log
fi

git_remote() {  # git, with the token (if any) for the GitHub server only
  if [ -n "$basic" ]; then
    GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0="http.${GITHUB_SERVER_URL:-https://github.com}/.extraheader" \
      GIT_CONFIG_VALUE_0="AUTHORIZATION: basic $basic" git "$@"
  else
    git "$@"
  fi
}

restore() {
  mkdir -p "$(dirname "$store")"
  rm -f "$store" "$lease_file"
  local rc=0
  git_remote ls-remote --exit-code --heads "$remote" "refs/heads/$branch" > /dev/null || rc=$?
  if [ "$rc" -eq 2 ]; then
    echo "no branch $branch on $remote yet: this first night starts a new store"
    : > "$lease_file"  # empty lease: the push must find the branch still absent
    return 0
  elif [ "$rc" -ne 0 ]; then
    echo "::error::cannot read branch $branch of $remote (git ls-remote exit $rc): the history is not restored," \
      "and no new store will replace it" >&2
    exit 1
  fi
  git_remote fetch --quiet --no-tags --depth 1 "$remote" "+refs/heads/$branch:refs/perfsuite/history"
  local lease
  lease=$(git rev-parse --verify "refs/perfsuite/history^{commit}")
  if ! git cat-file -e "$lease:$STORE_IN_BRANCH" 2> /dev/null; then
    echo "::error::branch $branch ($lease) has no $STORE_IN_BRANCH: not replacing it with a new store" >&2
    exit 1
  fi
  git cat-file blob "$lease:$STORE_IN_BRANCH" > "$store.part"
  mv "$store.part" "$store"
  echo "$lease" > "$lease_file"
  echo "restored $store from $branch at ${lease:0:12} ($(wc -c < "$store") bytes)"
}

keep() {
  if [ ! -f "$lease_file" ]; then
    echo "::error::$lease_file is missing: restore did not run, so nothing may be pushed" >&2
    exit 1
  fi
  local lease blob tree commit
  lease=$(cat "$lease_file")
  blob=$(git hash-object -w "$store")
  tree=$(printf '100644 blob %s\t%s\n' "$blob" "$STORE_IN_BRANCH" | git mktree)
  commit=$(git -c user.name=perfsuite-nightly -c user.email=perfsuite-nightly@users.noreply.github.com \
    commit-tree "$tree" -m "perfsuite history after run ${GITHUB_RUN_ID:-local}")
  git_remote push --force-with-lease="refs/heads/$branch:$lease" "$remote" "$commit:refs/heads/$branch"
  echo "kept $store on $branch at ${commit:0:12} (lease ${lease:-none: the branch is new})"
}

case "${1:-}" in
  restore) restore ;;
  keep) keep ;;
  *) echo "usage: $0 restore|keep" >&2; exit 2 ;;
esac
