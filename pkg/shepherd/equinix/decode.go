package equinix

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path"
	"strings"

	"github.com/google/uuid"
)

// What bmctl reads of Metal's answers, and nothing more. packngo's structs
// decode every field of a device, so one value bmctl never looks at (a
// provisioning_percentage beyond float32, which the description's "format:
// float" allows) failed every listing. Here a field bmctl does not use is
// never decoded, and a field it uses that it cannot read fails only the
// device or reservation it is in, with a cause naming both.

// device is a Metal device as bmctl uses it.
type device struct {
	ID, Hostname, State string
	Project             string // id of its project, if Metal said
	Reservation         string // id of its hardware reservation, if any
	Tags                []string
	IPs                 []ipAddress
	Metro, Facility     string
}

type ipAddress struct {
	Address string
	Family  int
	Public  bool
}

type hrefJSON struct {
	ID   string `json:"id"`
	Href string `json:"href"`
}

// id is the object's id, else the last segment of its href.
func (h *hrefJSON) id() string {
	if h == nil {
		return ""
	}
	if h.ID != "" {
		return h.ID
	}
	if h.Href == "" {
		return ""
	}
	return path.Base(h.Href)
}

type codeJSON struct {
	Code string `json:"code"`
}

type facilityJSON struct {
	Code  string    `json:"code"`
	Metro *codeJSON `json:"metro"`
}

type deviceJSON struct {
	ID          string   `json:"id"`
	Hostname    string   `json:"hostname"`
	State       string   `json:"state"`
	Tags        []string `json:"tags"`
	IPAddresses []struct {
		Address       string `json:"address"`
		AddressFamily int    `json:"address_family"`
		Public        bool   `json:"public"`
	} `json:"ip_addresses"`
	Facility            *facilityJSON `json:"facility"`
	Metro               *codeJSON     `json:"metro"`
	Project             *hrefJSON     `json:"project"`
	HardwareReservation *hrefJSON     `json:"hardware_reservation"`
}

// unreadable is an item of Metal's answer that bmctl cannot use.
type unreadable struct {
	kind, id string // id "" when the id itself is what cannot be read
	where    string // "page 2, item 3": where it was when it has no id
	cause    string
}

func (u *unreadable) Error() string {
	name := u.kind + " " + u.id
	if u.id == "" {
		name = u.kind + " (" + u.where + ")"
	}
	return name + ": " + u.cause + "; bmctl leaves it alone until Metal answers a value it can use"
}

// fieldError says which field of an item did not decode and why.
func fieldError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if strings.HasPrefix(te.Value, "number") {
			return fmt.Sprintf("field %s: %s is out of range for %s", te.Field, te.Value, te.Type)
		}
		return fmt.Sprintf("field %s: %s where %s was expected", te.Field, te.Value, te.Type)
	}
	return err.Error()
}

// isUUID accepts the 36-character form Metal writes, not the braced, urn: or
// dash-less forms uuid.Parse also takes: the id becomes a provider id and a
// URL path, and a reservation's short id is its first 8 characters
// (FuzzDecodeReservation found "urn:uuid" as one).
func isUUID(s string) bool {
	_, err := uuid.Parse(s)
	return err == nil && len(s) == 36
}

func decodeDevice(raw json.RawMessage, where string) (device, error) {
	var j deviceJSON
	err := json.Unmarshal(raw, &j)
	bad := func(cause string) (device, error) {
		if !isUUID(j.ID) {
			j.ID = ""
		}
		return device{ID: j.ID, Hostname: j.Hostname}, &unreadable{kind: "device", id: j.ID, where: where, cause: cause}
	}
	if err != nil {
		return bad(fieldError(err))
	}
	if !isUUID(j.ID) {
		return bad(fmt.Sprintf("field id: %q is not a UUID", j.ID))
	}
	d := device{ID: j.ID, Hostname: j.Hostname, State: j.State, Tags: j.Tags,
		Project: j.Project.id(), Reservation: j.HardwareReservation.id()}
	for i, ip := range j.IPAddresses {
		if ip.Public && (ip.AddressFamily == 4 || ip.AddressFamily == 6) {
			if _, err := netip.ParseAddr(ip.Address); err != nil {
				return bad(fmt.Sprintf("field ip_addresses[%d].address: %q is not an IP address", i, ip.Address))
			}
		}
		d.IPs = append(d.IPs, ipAddress{Address: ip.Address, Family: ip.AddressFamily, Public: ip.Public})
	}
	if j.Metro != nil {
		d.Metro = j.Metro.Code
	}
	if j.Facility != nil {
		d.Facility = j.Facility.Code
		if d.Metro == "" && j.Facility.Metro != nil {
			d.Metro = j.Facility.Metro.Code
		}
	}
	return d, nil
}

// reservation is a hardware reservation as bmctl uses it.
type reservation struct {
	Reservation
	Provisionable, Spare, HasDevice bool
}

type reservationJSON struct {
	ID            string `json:"id"`
	ShortID       string `json:"short_id"`
	Provisionable bool   `json:"provisionable"`
	Spare         bool   `json:"spare"`
	Plan          *struct {
		Slug string `json:"slug"`
	} `json:"plan"`
	Facility *facilityJSON   `json:"facility"`
	Device   json.RawMessage `json:"device"`
}

func decodeReservation(raw json.RawMessage, where string) (reservation, error) {
	var j reservationJSON
	err := json.Unmarshal(raw, &j)
	if !isUUID(j.ID) {
		if err == nil {
			err = fmt.Errorf("field id: %q is not a UUID", j.ID)
		}
		j.ID = ""
	}
	if err != nil {
		return reservation{}, &unreadable{kind: "hardware reservation", id: j.ID, where: where, cause: fieldError(err)}
	}
	r := reservation{Provisionable: j.Provisionable, Spare: j.Spare,
		HasDevice: len(j.Device) > 0 && string(j.Device) != "null"}
	r.ID, r.ShortID = j.ID, j.ShortID
	if r.ShortID == "" {
		r.ShortID = r.ID[:8]
	}
	if j.Plan != nil {
		r.Plan = j.Plan.Slug
	}
	if j.Facility != nil {
		r.Facility = j.Facility.Code
		if j.Facility.Metro != nil {
			r.Metro = j.Facility.Metro.Code
		}
	}
	return r, nil
}
