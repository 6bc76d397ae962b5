package redfish

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// ErrCredentials means the BMC refused the username and password.
var ErrCredentials = errors.New("BMC refused the credentials")

// Error is a request the BMC answered with an error status, and what its
// Redfish error object said.
type Error struct {
	Method string
	Path   string
	Status int
	// Code and Message are the error object's error.code and error.message.
	Code    string
	Message string
	// Detail is the most severe @Message.ExtendedInfo entry's message and
	// resolution, with its MessageId.
	Detail string
	// Body is the start of a body that was not a Redfish error object.
	Body string
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.Status, http.StatusText(e.Status))
	var parts []string
	if e.Message != "" {
		parts = append(parts, e.Message)
	}
	if e.Detail != "" && e.Detail != e.Message {
		parts = append(parts, e.Detail)
	}
	if len(parts) == 0 && e.Body != "" {
		parts = append(parts, e.Body)
	}
	if len(parts) > 0 {
		s += ": " + strings.Join(parts, "; ")
	}
	return s
}

// Unwrap makes a 401 an ErrCredentials.
func (e *Error) Unwrap() error {
	if e.Status == http.StatusUnauthorized {
		return ErrCredentials
	}
	return nil
}

type messageInfo struct {
	MessageID       string `json:"MessageId"`
	Message         string `json:"Message"`
	Severity        string `json:"Severity"`
	MessageSeverity string `json:"MessageSeverity"`
	Resolution      string `json:"Resolution"`
}

type errorObject struct {
	Error struct {
		Code         string        `json:"code"`
		Message      string        `json:"message"`
		ExtendedInfo []messageInfo `json:"@Message.ExtendedInfo"`
	} `json:"error"`
}

// severityRank orders Redfish message severities; unknown ones rank lowest.
func severityRank(m messageInfo) int {
	s := m.MessageSeverity
	if s == "" {
		s = m.Severity
	}
	switch s {
	case "Critical":
		return 3
	case "Warning":
		return 2
	case "OK":
		return 1
	}
	return 0
}

// parseError builds the Error for a response with an error status.
func parseError(method, path string, status int, body []byte) *Error {
	e := &Error{Method: method, Path: path, Status: status}
	var obj errorObject
	if json.Unmarshal(body, &obj) == nil && (obj.Error.Code != "" || obj.Error.Message != "" || len(obj.Error.ExtendedInfo) > 0) {
		e.Code, e.Message = obj.Error.Code, obj.Error.Message
		var worst *messageInfo
		for i := range obj.Error.ExtendedInfo {
			m := &obj.Error.ExtendedInfo[i]
			if worst == nil || severityRank(*m) > severityRank(*worst) {
				worst = m
			}
		}
		if worst != nil {
			d := worst.Message
			if worst.Resolution != "" {
				d += " Resolution: " + worst.Resolution
			}
			if worst.MessageID != "" {
				d += " [" + worst.MessageID + "]"
			}
			e.Detail = strings.TrimSpace(d)
		}
		if e.Message == "" {
			e.Message = e.Code
		}
		// What a BMC says goes into one-line causes and history rows.
		e.Code, e.Message, e.Detail = printable([]byte(e.Code), 200), printable([]byte(e.Message), 500), printable([]byte(e.Detail), 500)
		return e
	}
	e.Body = printable(body, 200)
	return e
}

// printable is the start of a text, on one line of valid UTF-8, for a
// cause.
func printable(b []byte, limit int) string {
	s := strings.Join(strings.Fields(strings.ToValidUTF8(string(b), "?")), " ")
	if len(s) > limit {
		s = strings.ToValidUTF8(s[:limit], "") + "..."
	}
	return s
}
