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
#                             refused, never overwritten. Before the push, the store is verified against the one on
#                             the branch now, fetched from the remote (not the artifact's): verify_store.py, stdlib
#                             only — exactly perfsuite's schema, every kept run unchanged, at most MAX_NEW_RUNS new
#                             runs, each of HISTORY_COMMIT when set, no acknowledgement added or changed
#                             (ALLOW_ACKS=1: a person keeping their own `history ack`). A store that fails is
#                             never pushed.
#
# Environment: STORE and HISTORY_BRANCH (required); HISTORY_REMOTE (default origin); MAX_NEW_RUNS (default 1);
# ALLOW_ACKS (1: acknowledgements may change; never set by the nightly);
# HISTORY_COMMIT (optional: the commit the nightly measured); GH_TOKEN (optional: sent to $GITHUB_SERVER_URL,
# github.com by default, as an HTTP header through GIT_CONFIG_* variables — never on a command line, never in
# .git/config).
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

verify() {  # the store against the branch as the remote has it now: never against what the artifact claims
  local lease=$1 head rc=0
  local -a before=() commit=() acks=()
  git_remote ls-remote --exit-code --heads "$remote" "refs/heads/$branch" > /dev/null || rc=$?
  if [ -z "$lease" ]; then
    if [ "$rc" -ne 2 ]; then
      echo "::error::branch $branch exists on $remote (or cannot be read: exit $rc), but the lease says the" \
        "first night: not pushing" >&2
      exit 1
    fi
  else
    git_remote fetch --quiet --no-tags --depth 1 "$remote" "+refs/heads/$branch:refs/perfsuite/kept"
    head=$(git rev-parse --verify "refs/perfsuite/kept^{commit}")
    if [ "$head" != "$lease" ]; then
      echo "::error::branch $branch is at ${head:0:12}, not at the lease ${lease:0:12}: not pushing" >&2
      exit 1
    fi
    git cat-file blob "$head:$STORE_IN_BRANCH" > "$store.before"
    before=(--before "$store.before")
  fi
  if [ -n "${HISTORY_COMMIT:-}" ]; then commit=(--commit "$HISTORY_COMMIT"); fi
  if [ "${ALLOW_ACKS:-0}" = 1 ]; then acks=(--allow-acks); fi
  python3 "$(dirname "$0")/verify_store.py" --after "$store" "${before[@]}" --max-new-runs "${MAX_NEW_RUNS:-1}" \
    "${commit[@]}" "${acks[@]}"
  rm -f "$store.before"
}

keep() {
  if [ ! -f "$lease_file" ]; then
    echo "::error::$lease_file is missing: restore did not run, so nothing may be pushed" >&2
    exit 1
  fi
  local lease blob tree commit
  lease=$(cat "$lease_file")
  if ! [[ "$lease" =~ ^([0-9a-f]{40}|[0-9a-f]{64})?$ ]]; then
    echo "::error::$lease_file does not hold a commit: nothing may be pushed" >&2
    exit 1
  fi
  verify "$lease"
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
