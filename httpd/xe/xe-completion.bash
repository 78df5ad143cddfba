# bash completion for xe (xcp-httpd). Install: source this file, or copy it to
# /etc/bash_completion.d/xe. The candidates come from `xe complete "<line>"`: command names,
# each command's parameters (derived from the datamodel), uuids from the server, enum values.

_xe_complete()
{
    local line="${COMP_LINE:0:$COMP_POINT}"
    local cur="${COMP_WORDS[COMP_CWORD]}"
    local prog="${COMP_WORDS[0]}"
    # bash splits words at COMP_WORDBREAKS ('=' and ':'), so the word being completed may be
    # only the tail of what xe sees ("uuid=ab" -> "ab"): trim the candidates to match.
    local full="${line##*[[:space:]]}"
    local strip=$(( ${#full} - ${#cur} ))
    if [ "$strip" -lt 0 ]; then strip=0; fi
    local c nospace=0
    COMPREPLY=()
    while IFS= read -r c; do
        [ -z "$c" ] && continue
        case "$c" in *=) nospace=1 ;; esac
        COMPREPLY+=("${c:$strip}")
    done < <("$prog" complete "$line" 2>/dev/null)
    if [ "$nospace" -eq 1 ] && type compopt >/dev/null 2>&1; then
        compopt -o nospace 2>/dev/null
    fi
    return 0
}

complete -o default -F _xe_complete xe
