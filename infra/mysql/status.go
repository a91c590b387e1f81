package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
)

// ServerStatus is the replication state of one MariaDB server, as
// ReadStatus reads it.
type ServerStatus struct {
	ServerID uint32 `json:"serverId"`
	DomainID uint32 `json:"domainId"`
	// BinlogPos is @@gtid_binlog_pos: the last transaction of each domain in
	// the server's binary log (its own writes, and with log_slave_updates
	// what it replicated).
	BinlogPos string `json:"gtidBinlogPos"`
	// SlavePos is @@gtid_slave_pos: the last transaction of each domain the
	// server applied as a replica.
	SlavePos string `json:"gtidSlavePos"`
	// CurrentPos is @@gtid_current_pos: per domain the later of the two.
	CurrentPos string   `json:"gtidCurrentPos"`
	SemiSync   SemiSync `json:"semiSync"`
	// Replicas are the server's replication connections (SHOW ALL SLAVES
	// STATUS), one per master it replicates from.
	Replicas []ReplicaStatus `json:"replicas,omitempty"`
}

// SemiSync is the semi-synchronous replication state of a server, as
// master and as replica: the rpl_semi_sync_* system variables (what is
// configured) and the Rpl_semi_sync_* status variables (what is in force).
type SemiSync struct {
	// MasterEnabled is rpl_semi_sync_master_enabled.
	MasterEnabled bool `json:"masterEnabled"`
	// MasterOn is Rpl_semi_sync_master_status: commits wait for a replica's
	// acknowledgement. A master falls back to asynchronous replication
	// (OFF) when an acknowledgement does not come within
	// rpl_semi_sync_master_timeout.
	MasterOn bool `json:"masterOn"`
	// MasterClients is Rpl_semi_sync_master_clients: connected
	// semi-synchronous replicas.
	MasterClients int `json:"masterClients"`
	// MasterTimeoutMillis is rpl_semi_sync_master_timeout.
	MasterTimeoutMillis int64 `json:"masterTimeoutMillis"`
	// ReplicaEnabled is rpl_semi_sync_slave_enabled.
	ReplicaEnabled bool `json:"replicaEnabled"`
	// ReplicaOn is Rpl_semi_sync_slave_status: the replica's I/O thread
	// acknowledges what it receives.
	ReplicaOn bool `json:"replicaOn"`
}

// ReplicaStatus is one replication connection of a replica (one row of
// SHOW ALL SLAVES STATUS).
type ReplicaStatus struct {
	// Connection is the connection name ("" for the default connection).
	Connection string `json:"connection"`
	MasterHost string `json:"masterHost"`
	MasterPort int    `json:"masterPort"`
	// MasterServerID is the master's server_id (0 before the first connect).
	MasterServerID uint32 `json:"masterServerId,omitempty"`
	// IORunning is Slave_IO_Running: "Yes", "No" or "Connecting".
	IORunning string `json:"ioRunning"`
	// SQLRunning is Slave_SQL_Running.
	SQLRunning bool `json:"sqlRunning"`
	// SecondsBehind is Seconds_Behind_Master; nil when MariaDB says NULL
	// (a thread is stopped).
	SecondsBehind *int64 `json:"secondsBehind"`
	// IOPos is Gtid_IO_Pos: the last GTID of each domain the I/O thread
	// received into the relay log (applied or not).
	IOPos        string `json:"gtidIoPos"`
	UsingGTID    string `json:"usingGtid"`
	LastIOError  string `json:"lastIoError,omitempty"`
	LastSQLError string `json:"lastSqlError,omitempty"`
}

// Running reports whether both replication threads run.
func (r ReplicaStatus) Running() bool { return r.IORunning == "Yes" && r.SQLRunning }

// ReadStatus reads a server's GTID positions, semi-sync state and
// replication connections.
func ReadStatus(ctx context.Context, db *sql.DB) (ServerStatus, error) {
	var st ServerStatus
	err := db.QueryRowContext(ctx, "SELECT @@server_id, @@gtid_domain_id, @@gtid_binlog_pos, @@gtid_slave_pos, @@gtid_current_pos").
		Scan(&st.ServerID, &st.DomainID, &st.BinlogPos, &st.SlavePos, &st.CurrentPos)
	if err != nil {
		return st, fmt.Errorf("mysql: read GTID positions: %w", err)
	}
	if st.SemiSync, err = ReadSemiSync(ctx, db); err != nil {
		return st, err
	}
	if st.Replicas, err = ReadReplicas(ctx, db); err != nil {
		return st, err
	}
	return st, nil
}

// ReadSemiSync reads a server's semi-sync variables and status. A server
// without semi-sync support reads as all off.
func ReadSemiSync(ctx context.Context, db *sql.DB) (SemiSync, error) {
	var s SemiSync
	vars, err := nameValues(ctx, db, "SHOW GLOBAL VARIABLES LIKE 'rpl_semi_sync_%'")
	if err != nil {
		return s, fmt.Errorf("mysql: read semi-sync variables: %w", err)
	}
	status, err := nameValues(ctx, db, "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_%'")
	if err != nil {
		return s, fmt.Errorf("mysql: read semi-sync status: %w", err)
	}
	s.MasterEnabled = isOn(vars["rpl_semi_sync_master_enabled"])
	s.ReplicaEnabled = isOn(vars["rpl_semi_sync_slave_enabled"])
	s.MasterTimeoutMillis, _ = strconv.ParseInt(vars["rpl_semi_sync_master_timeout"], 10, 64)
	s.MasterOn = isOn(status["rpl_semi_sync_master_status"])
	s.ReplicaOn = isOn(status["rpl_semi_sync_slave_status"])
	s.MasterClients, _ = strconv.Atoi(status["rpl_semi_sync_master_clients"])
	return s, nil
}

// ReadReplicas reads SHOW ALL SLAVES STATUS: one entry per replication
// connection, none on a server that replicates from nobody.
func ReadReplicas(ctx context.Context, db *sql.DB) ([]ReplicaStatus, error) {
	rows, err := columnRows(ctx, db, "SHOW ALL SLAVES STATUS")
	if err != nil {
		return nil, fmt.Errorf("mysql: SHOW ALL SLAVES STATUS: %w", err)
	}
	out := make([]ReplicaStatus, 0, len(rows))
	for _, r := range rows {
		rs := ReplicaStatus{
			Connection:   r["Connection_name"].String,
			MasterHost:   r["Master_Host"].String,
			IORunning:    r["Slave_IO_Running"].String,
			SQLRunning:   r["Slave_SQL_Running"].String == "Yes",
			IOPos:        strings.TrimSpace(r["Gtid_IO_Pos"].String),
			UsingGTID:    r["Using_Gtid"].String,
			LastIOError:  r["Last_IO_Error"].String,
			LastSQLError: r["Last_SQL_Error"].String,
		}
		rs.MasterPort, _ = strconv.Atoi(r["Master_Port"].String)
		if id, err := strconv.ParseUint(r["Master_Server_Id"].String, 10, 32); err == nil {
			rs.MasterServerID = uint32(id)
		}
		if v := r["Seconds_Behind_Master"]; v.Valid {
			if n, err := strconv.ParseInt(v.String, 10, 64); err == nil {
				rs.SecondsBehind = &n
			}
		}
		out = append(out, rs)
	}
	return out, nil
}

func isOn(v string) bool { return strings.EqualFold(v, "ON") || v == "1" }

// nameValues runs a SHOW ... LIKE statement and returns its rows as a map
// from lower-cased name to value.
func nameValues(ctx context.Context, db *sql.DB, query string) (map[string]string, error) {
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	m := map[string]string{}
	for rows.Next() {
		var name string
		var value sql.NullString
		if err := rows.Scan(&name, &value); err != nil {
			return nil, err
		}
		m[strings.ToLower(name)] = value.String
	}
	return m, rows.Err()
}

// columnRows runs a statement whose columns vary between server versions
// (SHOW ... STATUS) and returns each row by column name.
func columnRows(ctx context.Context, db *sql.DB, query string) ([]map[string]sql.NullString, error) {
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var out []map[string]sql.NullString
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		m := make(map[string]sql.NullString, len(cols))
		for i, c := range cols {
			m[c] = vals[i]
		}
		out = append(out, m)
	}
	return out, rows.Err()
}
