package mysqllab

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // "" for valid; else a substring of the error
	}{
		{"defaults", Config{Dir: "/tmp/lab"}, ""},
		{"default config", DefaultConfig("/tmp/lab"), ""},
		{"three servers and a base port", Config{Dir: "d", Servers: []string{"idc-a", "idc-b", "idc-c"}, BasePort: 13306}, ""},
		{"async", Config{Dir: "d", Async: true, SemiSyncTimeout: time.Second}, ""},
		{"no dir", Config{}, "Dir is required"},
		{"upper-case name", Config{Dir: "d", Servers: []string{"IDC-A"}}, `server name "IDC-A"`},
		{"name with a quote", Config{Dir: "d", Servers: []string{"a'b"}}, `server name "a'b"`},
		{"name starting with a digit", Config{Dir: "d", Servers: []string{"1a"}}, `server name "1a"`},
		{"duplicate name", Config{Dir: "d", Servers: []string{"a", "a"}}, `server "a" twice`},
		{"privileged port", Config{Dir: "d", BasePort: 80}, "BasePort 80"},
		{"ports past 65535", Config{Dir: "d", BasePort: 65535}, "BasePort 65535"},
		{"negative semi-sync timeout", Config{Dir: "d", SemiSyncTimeout: -time.Second}, "SemiSyncTimeout"},
		{"semi-sync timeout under 1ms", Config{Dir: "d", SemiSyncTimeout: time.Microsecond}, "1ms resolution"},
		{"semi-sync timeout too long", Config{Dir: "d", SemiSyncTimeout: 50 * 24 * time.Hour}, "SemiSyncTimeout"},
		{"negative start timeout", Config{Dir: "d", StartTimeout: -1}, "StartTimeout"},
		{"negative stop timeout", Config{Dir: "d", StopTimeout: -1}, "StopTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want ErrInvalidConfig mentioning %q", err, tt.want)
			}
		})
	}
}

func TestSupported(t *testing.T) {
	tests := []struct {
		version string
		want    bool
	}{
		{"mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (Debian 12)", true},
		{"/usr/sbin/mariadbd  Ver 11.4.2-MariaDB for Linux on x86_64", true},
		{"mysqld  Ver 10.3.39-MariaDB-0+deb10u1 for debian-linux-gnu", true},
		{"mysqld  Ver 10.1.48-MariaDB-0+deb9u2 for debian-linux-gnu", false},
		{"/usr/sbin/mysqld  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := supported(tt.version); got != tt.want {
			t.Errorf("supported(%q) = %v, want %v", tt.version, got, tt.want)
		}
	}
}
