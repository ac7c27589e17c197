#!/bin/sh
# Alertmanager reads no environment variables in its config, so compose.yaml starts it through
# this script: it writes SOURCE to DESTINATION with every ${NAME} replaced by the value of the
# environment variable NAME (compose.yaml passes them from .env), then Alertmanager runs on
# DESTINATION. Each ${NAME} stands inside a YAML double-quoted string, so `\` and `"` in a value
# are escaped for it; comment lines are copied as they are. An unset or empty variable, or one holding a line break, is an error that
# names it, and DESTINATION is left as it was.
#
# POSIX sh and awk only: it runs under the busybox of the prom/alertmanager image.
# Usage: render.sh SOURCE DESTINATION
set -eu
if [ "$#" -ne 2 ]; then
  echo "usage: $0 SOURCE DESTINATION" >&2
  exit 2
fi
source=$1
destination=$2
partial="$destination.partial"

if awk '
  function escaped(value,    result, i, c) {
    result = ""
    for (i = 1; i <= length(value); i++) {
      c = substr(value, i, 1)
      if (c == "\\" || c == "\"") result = result "\\"
      result = result c
    }
    return result
  }
  /^[ \t]*#/ { print; next }
  {
    rest = $0
    line = ""
    while (match(rest, /[$][{][A-Za-z_][A-Za-z0-9_]*[}]/)) {
      name = substr(rest, RSTART + 2, RLENGTH - 3)
      value = ENVIRON[name]
      if (value == "") {
        printf "%s line %d: ${%s} is not set (set %s in .env)\n", FILENAME, FNR, name, name > "/dev/stderr"
        failed = 1
      } else if (index(value, "\n") || index(value, "\r")) {
        printf "%s line %d: ${%s} holds a line break\n", FILENAME, FNR, name > "/dev/stderr"
        failed = 1
      }
      line = line substr(rest, 1, RSTART - 1) escaped(value)
      rest = substr(rest, RSTART + RLENGTH)
    }
    print line rest
  }
  END { exit failed }
' "$source" > "$partial"; then
  mv "$partial" "$destination"
else
  rm -f "$partial"
  exit 1
fi
