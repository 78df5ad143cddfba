# bash completion for xe (xcp-httpd). Install: source this file, or copy it to
# /etc/bash_completion.d/xe. The candidates come from `xe complete "<line>"`: command names,
# each command's parameters (derived from the datamodel), uuids and names from the server, enum
# values.

_xe_complete()
{
    # `xe complete` answers what readline inserts: the text after the word's last '=' or ':'
    # (COMP_WORDBREAKS), escaped, so this function only hands it over
    local line="${COMP_LINE:0:$COMP_POINT}"
    local c nospace=0
    COMPREPLY=()
    while IFS= read -r c; do
        [ -z "$c" ] && continue
        case "$c" in *=) nospace=1 ;; esac
        COMPREPLY+=("$c")
    done < <("${COMP_WORDS[0]}" complete "$line" 2>/dev/null)
    if [ "$nospace" -eq 1 ] && type compopt >/dev/null 2>&1; then
        compopt -o nospace 2>/dev/null
    fi
    return 0
}

complete -o default -F _xe_complete xe
