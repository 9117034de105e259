#!/usr/bin/env bash
# Shows what extauthz can do today through the built binary: the claims
# expressions of the Traefik Hub reference document, evaluated against its
# sample claims, and how a syntax error is reported.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-bin/extauthz}
doc=pkg/claims/testdata/reference.json

echo "== $("$bin" version)"
echo "== claims expressions against $doc:"
sed 's/^/   /' "$doc"
echo
for expr in \
  'Equals(`grp`, `admin`)' \
  'Prefix(`referrer`, `http://example.com`)' \
  'Contains(`referrer`, `/foo/`)' \
  'Contains(`areas`, `home`)' \
  'SplitContains(`scope`, ` `, `writer`)' \
  'OneOf(`areas`, `office`, `lab`)' \
  'Equals(`grp`, `admin`) && Equals(`active`, `true`)' \
  'Equals(`grp`, `admin`) || Equals(`active`, `true`)' \
  '!Equals(`grp`, `testers`)' \
  'Equals(`user.name`, `John Snow`)' \
  'Equals(`grp`, `testers`) || !Contains(`areas`, `office`)' \
  'OneOf(`user.status`, `alive`, `unknown`)'; do
  printf '   %-6s %s\n' "$("$bin" claims --expr "$expr" --claims "$doc")" "$expr"
done

echo
echo "== a syntax error names its column and exits with status 2:"
set +e
"$bin" claims --expr 'Equals(`grp`, `admin`) & Equals(`active`, `true`)' --claims "$doc" 2>&1 | sed 's/^/   /'
status=${PIPESTATUS[0]}
set -e
echo "   (exit status $status)"
