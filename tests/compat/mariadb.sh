#!/usr/bin/env bash
# MariaDB (Debian's mariadbd, unmodified) in the isolated namespace, listening on
# 0.0.0.0:23306 through xsockd (XSOCK_ROUTE 0.0.0.0/0:23306) — mariadbd polls its TCP and
# unix listeners and accepts in its main thread, then serves each connection in a thread.
# Private datadir made here by mariadb-install-db, --skip-grant-tables, unix socket and
# pid file in the work directory. The `mariadb` client on the host, over TCP to
# 127.0.0.1:23306: creates a table, inserts 10000 rows (10 multi-row INSERTs), reads
# them back. Checked: the count, the rows as the client reads them (sha256 of the output
# against the rows generated here), and a server-side SHA2 over the stored rows (what
# arrived). Then `mariadb-admin shutdown` over TCP, and mariadbd must exit 0.
source "$(dirname "$0")/lib.sh"
require_root_and_netns
require_programs mariadbd mariadb mariadb-admin mariadb-install-db

port=23306
rows=10000
expect_port_free "$port"
log "mariadb-server $(debian_version mariadb-server), mariadb-client $(debian_version mariadb-client)"

db=$WORK/db
mkdir -p "$db"
innodb=(--innodb-buffer-pool-size=32M --innodb-log-file-size=16M)
on_host timeout -k 5 60 mariadb-install-db --no-defaults --datadir="$db/data" --user=root \
  --auth-root-authentication-method=normal --skip-test-db "${innodb[@]}" \
  >"$WORK/install-db.log" 2>&1 ||
  fail_with_logs "mariadb-install-db failed" "$WORK/install-db.log"

# The rows: id and the sha256 of the id's decimal text; the load script, the expected
# client output and the expected server-side digest come from the same generator.
"$PYTHON3" - "$rows" "$WORK" <<'PY' || fail "generating the SQL failed"
import hashlib, sys
rows, work = int(sys.argv[1]), sys.argv[2]
vals = [(i, hashlib.sha256(str(i).encode()).hexdigest()) for i in range(1, rows + 1)]
with open(f"{work}/load.sql", "w") as f:
    f.write("CREATE DATABASE compat;\nUSE compat;\n"
            "CREATE TABLE r (id INT PRIMARY KEY, v CHAR(64) NOT NULL) ENGINE=InnoDB;\n")
    for b in range(0, rows, 1000):
        f.write("INSERT INTO r VALUES " +
                ",".join(f"({i},'{v}')" for i, v in vals[b:b + 1000]) + ";\n")
with open(f"{work}/expected.tsv", "w") as f:
    f.writelines(f"{i}\t{v}\n" for i, v in vals)
with open(f"{work}/expected.digest", "w") as f:
    f.write(hashlib.sha256("\n".join(f"{i}:{v}" for i, v in vals).encode()).hexdigest() + "\n")
PY

compat_start_xsockd
ROUTE="0.0.0.0/0:$port,127.0.0.0/8"
start_ns mariadbd mariadbd --no-defaults --datadir="$db/data" --user=root \
  --socket="$db/mysqld.sock" --pid-file="$db/mysqld.pid" --log-error="$db/error.log" \
  --port="$port" --bind-address=0.0.0.0 --skip-name-resolve --skip-grant-tables \
  "${innodb[@]}"
pid=$BG_PID
logs=("$WORK/mariadbd.log" "$db/error.log")
wait_listening "$port" "$pid" 60

counters before
client=(--no-defaults --protocol=TCP -h 127.0.0.1 -P "$port" -u root --connect-timeout=15)

on_host timeout -k 5 60 mariadb "${client[@]}" <"$WORK/load.sql" >"$WORK/load.out" 2>&1 ||
  fail_with_logs "loading $rows rows failed" "$WORK/load.out" "${logs[@]}"
log "created compat.r and inserted $rows rows"

count=$(on_host timeout -k 5 30 mariadb "${client[@]}" -N -B \
  -e 'SELECT COUNT(*) FROM compat.r' 2>"$WORK/count.err")
[[ $count == "$rows" ]] ||
  fail_with_logs "SELECT COUNT(*) gave '$count', expected $rows" "$WORK/count.err" "${logs[@]}"
log "count: $count"

on_host timeout -k 5 30 mariadb "${client[@]}" -N -B \
  -e 'SELECT id, v FROM compat.r ORDER BY id' >"$WORK/got.tsv" 2>"$WORK/select.err" ||
  fail_with_logs "SELECT of the rows failed" "$WORK/select.err" "${logs[@]}"
expect_same_file "rows read back" "$WORK/expected.tsv" "$WORK/got.tsv"

digest=$(on_host timeout -k 5 30 mariadb "${client[@]}" -N -B -e \
  "SET SESSION group_concat_max_len = 16777216;
   SELECT SHA2(GROUP_CONCAT(CONCAT(id, ':', v) ORDER BY id SEPARATOR '\n'), 256) FROM compat.r" \
  2>"$WORK/digest.err")
[[ $digest == "$(cat "$WORK/expected.digest")" ]] ||
  fail_with_logs "server-side digest '$digest', expected $(cat "$WORK/expected.digest")" \
    "$WORK/digest.err" "${logs[@]}"
log "server-side SHA2 over the stored rows: $digest (equal)"

# The statements and the rows went through xsockd (nothing else can leave the namespace).
counters after
expect_counter_grew before after bytes_from_host "$(stat -c %s "$WORK/load.sql")"
expect_counter_grew before after bytes_to_host "$(stat -c %s "$WORK/expected.tsv")"

on_host timeout -k 5 30 mariadb-admin "${client[@]}" shutdown >"$WORK/shutdown.out" 2>&1 ||
  fail_with_logs "mariadb-admin shutdown failed" "$WORK/shutdown.out" "${logs[@]}"
for ((i = 0; i < 600; i++)); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
kill -0 "$pid" 2>/dev/null && fail_with_logs "mariadbd still runs 30 s after shutdown" "${logs[@]}"
wait "$pid"; rc=$?
[[ $rc -eq 0 ]] || fail_with_logs "mariadbd exited with status $rc" "${logs[@]}"
grep -q 'Shutdown complete' "$db/error.log" ||
  fail_with_logs "no 'Shutdown complete' in mariadbd's log" "$db/error.log"
log "PASS"
