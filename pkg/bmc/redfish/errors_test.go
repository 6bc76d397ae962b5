package redfish

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseError feeds error bodies a BMC might send: whatever they hold,
// the cause is one line of valid UTF-8 of bounded length.
func FuzzParseError(f *testing.F) {
	f.Add([]byte(`{"error":{"code":"Base.1.8.GeneralError","message":"A general error has occurred.","@Message.ExtendedInfo":[{"MessageId":"Base.1.8.Success","Message":"ok","Severity":"OK"},{"MessageId":"IDRAC.2.8.SYS446","Message":"In a power transition.","MessageSeverity":"Critical","Resolution":"Wait."}]}}`))
	f.Add([]byte(`{"error":{"message":"line one\nline two\r\n\tthree"}}`))
	f.Add([]byte(`{"error":{"@Message.ExtendedInfo":[{"Message":"only extended"}]}}`))
	f.Add([]byte(`<html><body>502 Bad Gateway</body></html>`))
	f.Add([]byte("\xff\xfe not utf-8 \x00"))
	f.Add([]byte(`{"error":{"message":"` + strings.Repeat("é", 2000) + `"}}`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		msg := parseError("POST", "/redfish/v1/x", 400, body).Error()
		if strings.ContainsAny(msg, "\n\r") || !utf8.ValidString(msg) || len(msg) > 2000 {
			t.Fatalf("cause %q: want one line of valid UTF-8 under 2000 bytes", msg)
		}
	})
}

func TestMostSevereExtendedInfoWins(t *testing.T) {
	e := parseError("POST", "/p", 400, []byte(`{"error":{"code":"C","message":"M","@Message.ExtendedInfo":[
		{"MessageId":"A","Message":"warning one","Severity":"Warning"},
		{"MessageId":"B","Message":"critical one","MessageSeverity":"Critical","Resolution":"Do X."},
		{"MessageId":"C","Message":"ok one","Severity":"OK"}]}}`))
	if got, want := e.Error(), "POST /p: 400 Bad Request: M; critical one Resolution: Do X. [B]"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
