#!/usr/bin/env bash
# Run a development server in the foreground, on 127.0.0.1, with its data under <data_dir>:
#
#   run-server.sh redis      <data_dir> <port>
#   run-server.sh clickhouse <data_dir> <port> [<http_port>]   (http_port defaults to 8123)
#
# The server replaces this shell (exec), so SIGTERM from supervisord stops it gracefully.
# It uses the same configuration as devservers/servers.py: redis.conf, and for ClickHouse
# config.xml rendered from clickhouse-config.xml.template plus clickhouse-users.xml.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
    echo "usage: $0 {redis|clickhouse} <data_dir> <port> [<http_port>]" >&2
    exit 2
}

# Escape the characters XML gives a meaning to; the replacements are quoted so that
# bash 5.2's patsub_replacement does not read '&' as "the matched text".
xml_escape() {
    local s="$1"
    s="${s//'&'/'&amp;'}"
    s="${s//'<'/'&lt;'}"
    s="${s//'>'/'&gt;'}"
    printf '%s' "$s"
}

[[ $# -ge 3 && $# -le 4 ]] || usage
kind="$1"
port="$3"
http_port="${4:-8123}"
mkdir -p "$2"
data_dir="$(cd "$2" && pwd)"

case "$kind" in
    redis)
        exec redis-server "$here/redis.conf" --port "$port" --dir "$data_dir"
        ;;
    clickhouse)
        mkdir -p "$data_dir"/{data,tmp,user_files,format_schemas,log}
        config="$(<"$here/clickhouse-config.xml.template")"
        config="${config//'@DATA_DIR@'/"$(xml_escape "$data_dir")"}"
        config="${config//'@TCP_PORT@'/"$port"}"
        config="${config//'@HTTP_PORT@'/"$http_port"}"
        printf '%s\n' "$config" >"$data_dir/config.xml"
        cp "$here/clickhouse-users.xml" "$data_dir/users.xml"
        exec clickhouse-server --config-file="$data_dir/config.xml"
        ;;
    *)
        usage
        ;;
esac
