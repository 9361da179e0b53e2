# Source me: make python3.11, python3.12 and python3.13 from pyenv visible to hatch.
if command -v pyenv >/dev/null 2>&1; then
  _versions=()
  for _v in 3.11 3.12 3.13; do
    _full=$(pyenv versions --bare 2>/dev/null | grep -E "^${_v//./\\.}\.[0-9]+$" | sort -V | tail -n 1)
    [ -n "$_full" ] && _versions+=("$_full")
  done
  if ((${#_versions[@]})); then
    PYENV_VERSION=$(IFS=:; echo "${_versions[*]}")
    export PYENV_VERSION
  fi
  unset _v _full _versions
fi
