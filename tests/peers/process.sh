# Process helpers shared by the peer scripts (sourced, not run).
#
# A pid file holds "PID START_TIME": the start time (in clock ticks since
# boot) tells the process we started from a later one that reuses its PID.

start_time() { # the process's start time in clock ticks, to never mistake a reused PID
    awk '{ sub(/.*\) /, ""); print $20 }' "/proc/$1/stat" 2>/dev/null || true
}

# Stop the process a pid file names, if it is still that process: TERM, up
# to TRIES × 50 ms for it to go (default 100), then KILL; remove the file.
stop_pidfile() {
    local file=$1 tries=${2:-100} pid started state
    [ -f "$file" ] || return 0
    read -r pid started < "$file" || true
    if [ -n "${pid:-}" ] && [ "$(start_time "$pid")" = "$started" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 "$tries"); do
            # Gone, or a zombie waiting for its parent: either way stopped.
            state=$(awk '{ sub(/.*\) /, ""); print $1 }' "/proc/$pid/stat" 2>/dev/null || echo gone)
            [ "$state" = gone ] || [ "$state" = Z ] && break
            sleep 0.05
        done
        if [ "$(start_time "$pid")" = "$started" ] && [ "$(awk '{ sub(/.*\) /, ""); print $1 }' "/proc/$pid/stat" 2>/dev/null)" != Z ]; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$file"
}

# Wait until PID listens on 127.0.0.1:PORT, up to TRIES × 50 ms (default
# 200); when it exits first, show the end of LOG. NAME names it.
wait_for_port() {
    local name=$1 pid=$2 port=$3 log=$4 tries=${5:-200}
    for _ in $(seq 1 "$tries"); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited while starting:" >&2
            tail -n 20 "$log" >&2
            return 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$name ready (pid $pid, port $port)"
            return 0
        fi
        sleep 0.05
    done
    echo "$name did not open its port in $((tries / 20)) s" >&2
    return 1
}
