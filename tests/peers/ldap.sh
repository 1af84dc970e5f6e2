#!/usr/bin/env bash
# A real OpenLDAP slapd on 127.0.0.1 for the tests.
#
#   ldap.sh install              install slapd and ldap-utils (idempotent)
#   ldap.sh start DIR PORT       start one in DIR; prints when ready
#   ldap.sh stop DIR             stop the one started in DIR
#   ldap.sh apply DIR LDIF_FILE  add or change entries as the admin (ldapmodify -a)
#
# Suffix dc=corp,dc=test; people go under ou=people,dc=corp,dc=test. The
# admin is cn=admin,dc=corp,dc=test (password admin-pw); the service
# account cn=causeway,ou=services,dc=corp,dc=test (password causeway-pw)
# may read everything but passwords; anonymous users read nothing. StartTLS
# with a certificate for 127.0.0.1 and localhost from a test CA:
# DIR/certs/ca.pem.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/process.sh"

SUFFIX=dc=corp,dc=test
ADMIN=cn=admin,$SUFFIX
ADMIN_PW=admin-pw

install() {
    if command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ]; then
        if command -v ldapmodify >/dev/null 2>&1; then return 0; fi
    fi
    echo "installing slapd…" >&2
    export DEBIAN_FRONTEND=noninteractive
    # The package would start a system-wide slapd; we start our own.
    local guard=/usr/sbin/policy-rc.d created=0
    if [ ! -e "$guard" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$guard" && chmod +x "$guard" && created=1
    fi
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends slapd ldap-utils >/dev/null
    if [ "$created" = 1 ]; then rm -f "$guard"; fi
}

certificates() {
    local certs=$1
    [ -f "$certs/server.crt" ] && return 0
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -subj "/CN=Causeway test LDAP CA" -keyout "$certs/ca.key" -out "$certs/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
        -keyout "$certs/server.key" -out "$certs/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > "$certs/ext.cnf"
    openssl x509 -req -in "$certs/server.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" -CAcreateserial \
        -days 3650 -extfile "$certs/ext.cnf" -out "$certs/server.crt" 2>/dev/null
}

start() {
    local dir=$1 port=$2
    dir=$(realpath -m "$dir")
    mkdir -p "$dir/certs" "$dir/data"
    certificates "$dir/certs"
    echo "$port" > "$dir/port"
    if [ ! -d "$dir/slapd.d" ]; then
        mkdir -p "$dir/slapd.d"
        cat > "$dir/config.ldif" <<LDIF
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: $dir/slapd.pid.internal
olcTLSCACertificateFile: $dir/certs/ca.pem
olcTLSCertificateFile: $dir/certs/server.crt
olcTLSCertificateKeyFile: $dir/certs/server.key

dn: cn=module{0},cn=config
objectClass: olcModuleList
cn: module{0}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file:///etc/ldap/schema/core.ldif
include: file:///etc/ldap/schema/cosine.ldif
include: file:///etc/ldap/schema/inetorgperson.ldif

dn: olcDatabase={-1}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {-1}frontend
olcSizeLimit: size.soft=50 size.hard=50 size.pr=20 size.prtotal=unlimited

dn: olcDatabase={0}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {0}config
olcAccess: {0}to * by * none

dn: olcDatabase={1}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {1}mdb
olcSuffix: $SUFFIX
olcDbDirectory: $dir/data
olcDbMaxSize: 104857600
olcRootDN: $ADMIN
olcRootPW: $ADMIN_PW
olcAccess: {0}to attrs=userPassword by anonymous auth by * none
olcAccess: {1}to * by dn.exact="cn=causeway,ou=services,$SUFFIX" read by * none
LDIF
        slapadd -n 0 -F "$dir/slapd.d" -l "$dir/config.ldif" >/dev/null
        cat > "$dir/base.ldif" <<LDIF
dn: $SUFFIX
objectClass: dcObject
objectClass: organization
dc: corp
o: Corp

dn: ou=people,$SUFFIX
objectClass: organizationalUnit
ou: people

dn: ou=services,$SUFFIX
objectClass: organizationalUnit
ou: services

dn: cn=causeway,ou=services,$SUFFIX
objectClass: applicationProcess
objectClass: simpleSecurityObject
cn: causeway
userPassword: causeway-pw
LDIF
        slapadd -n 1 -F "$dir/slapd.d" -l "$dir/base.ldif" >/dev/null
    fi
    # -d: stay in the foreground (its log goes to slapd.log).
    slapd -d stats -h "ldap://127.0.0.1:$port/" -F "$dir/slapd.d" >>"$dir/slapd.log" 2>&1 &
    local pid=$!
    echo "$pid $(start_time "$pid")" > "$dir/slapd.pid"
    for _ in $(seq 1 200); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "slapd exited while starting:" >&2
            tail -n 20 "$dir/slapd.log" >&2 || true
            exit 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "slapd ready (pid $pid, port $port)"
            return 0
        fi
        sleep 0.05
    done
    echo "slapd did not open its port in 10 s" >&2
    exit 1
}

stop() {
    local dir=$1
    stop_pidfile "$dir/slapd.pid"
}

apply() {
    local dir=$1 file=$2
    ldapmodify -a -x -H "ldap://127.0.0.1:$(cat "$dir/port")/" -D "$ADMIN" -w "$ADMIN_PW" -f "$file" >/dev/null
}

case "${1:-}" in
    install) install ;;
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    apply) shift; apply "$@" ;;
    *) echo "usage: $0 install | start DIR PORT | stop DIR | apply DIR LDIF_FILE" >&2; exit 2 ;;
esac
