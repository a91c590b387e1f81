package drill

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written in JSON and YAML as a Go duration
// string ("2s", "150ms", "1m30s"). Reading one refuses negative durations
// and numbers without a unit (even 0: write "0s").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(strconv.Quote(d.String())), nil
}

// UnmarshalJSON reads a duration string; null leaves d unchanged. Errors
// wrap ErrBadDuration.
func (d *Duration) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	if len(b) == 0 || b[0] != '"' {
		if isJSONNumber(b) {
			return &durationError{"duration " + string(b) + " has no unit (write \"" + string(b) + "s\" or \"" + string(b) + "ms\")"}
		}
		return &durationError{"want a duration like \"150ms\" or \"2s\", got " + describeJSON(b)}
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return &durationError{"want a duration like \"150ms\" or \"2s\", got " + describeJSON(b)}
	}
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// ParseDuration parses a non-negative Go duration string with a unit.
// Errors wrap ErrBadDuration.
func ParseDuration(s string) (Duration, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, &durationError{"empty duration (want one like \"150ms\" or \"2s\")"}
	}
	if _, err := strconv.ParseFloat(t, 64); err == nil {
		return 0, &durationError{"duration " + strconv.Quote(s) + " has no unit (write \"" + t + "s\" or \"" + t + "ms\")"}
	}
	v, err := time.ParseDuration(t)
	if err != nil {
		return 0, &durationError{"duration " + strconv.Quote(s) + " is not valid (want one like \"150ms\", \"2s\" or \"1m30s\")"}
	}
	if v < 0 {
		return 0, &durationError{"duration " + strconv.Quote(s) + " is negative"}
	}
	return Duration(v), nil
}

func isJSONNumber(b []byte) bool {
	if len(b) == 0 || !(b[0] == '-' || (b[0] >= '0' && b[0] <= '9')) {
		return false
	}
	return json.Valid(b)
}
