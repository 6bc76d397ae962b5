package metalemu

// The JSON shapes the emulator answers with, written from the Metal OpenAPI
// description (testdata/metal-openapi/components/schemas) rather than from
// packngo's structs, so that the tests check packngo against the API and not
// against itself.

type href struct {
	Href string `json:"href"`
}

type metroJSON struct {
	ID      string `json:"id"`
	Code    string `json:"code"`
	Name    string `json:"name"`
	Country string `json:"country,omitempty"`
}

type facilityJSON struct {
	ID    string     `json:"id"`
	Code  string     `json:"code"`
	Name  string     `json:"name"`
	Metro *metroJSON `json:"metro,omitempty"`
}

type planJSON struct {
	ID   string `json:"id"`
	Slug string `json:"slug"`
	Name string `json:"name"`
}

type osJSON struct {
	Slug string `json:"slug"`
	Name string `json:"name"`
}

type ipJSON struct {
	ID            string `json:"id"`
	Href          string `json:"href"`
	Address       string `json:"address"`
	AddressFamily int    `json:"address_family"`
	Public        bool   `json:"public"`
	Management    bool   `json:"management"`
	CIDR          int    `json:"cidr"`
	AssignedTo    href   `json:"assigned_to"`
	CreatedAt     string `json:"created_at"`
}

type deviceJSON struct {
	ID                  string        `json:"id"`
	ShortID             string        `json:"short_id"`
	Href                string        `json:"href"`
	Hostname            string        `json:"hostname"`
	State               string        `json:"state"`
	CreatedAt           string        `json:"created_at"`
	UpdatedAt           string        `json:"updated_at"`
	Locked              bool          `json:"locked"`
	BillingCycle        string        `json:"billing_cycle"`
	Tags                []string      `json:"tags"`
	IPAddresses         []ipJSON      `json:"ip_addresses"`
	Plan                planJSON      `json:"plan"`
	OS                  osJSON        `json:"operating_system"`
	Facility            *facilityJSON `json:"facility,omitempty"`
	Metro               *metroJSON    `json:"metro,omitempty"`
	Project             href          `json:"project"`
	HardwareReservation *href         `json:"hardware_reservation,omitempty"`
	SSHKeys             []href        `json:"ssh_keys"`
}

type reservationJSON struct {
	ID            string       `json:"id"`
	ShortID       string       `json:"short_id"`
	Href          string       `json:"href"`
	CreatedAt     string       `json:"created_at"`
	Facility      facilityJSON `json:"facility"`
	Plan          planJSON     `json:"plan"`
	Project       href         `json:"project"`
	Provisionable bool         `json:"provisionable"`
	Spare         bool         `json:"spare"`
	// Device is an href only, as Metal answers without ?include=device.
	Device *href `json:"device,omitempty"`
}

type projectJSON struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Href      string `json:"href"`
	CreatedAt string `json:"created_at"`
	UpdatedAt string `json:"updated_at"`
	Devices   []href `json:"devices"`
	SSHKeys   []href `json:"ssh_keys"`
}

type sshKeyJSON struct {
	ID          string `json:"id"`
	Href        string `json:"href"`
	Label       string `json:"label"`
	Key         string `json:"key"`
	Fingerprint string `json:"fingerprint"`
	CreatedAt   string `json:"created_at"`
	UpdatedAt   string `json:"updated_at"`
	Entity      href   `json:"entity"`
}

type metaJSON struct {
	Self        href  `json:"self"`
	First       href  `json:"first"`
	Last        href  `json:"last"`
	Next        *href `json:"next,omitempty"`
	Previous    *href `json:"previous,omitempty"`
	Total       int   `json:"total"`
	CurrentPage int   `json:"current_page"`
	LastPage    int   `json:"last_page"`
	omit        bool  // ListMeta.Omit
}

func (m metaJSON) orNil() *metaJSON {
	if m.omit {
		return nil
	}
	return &m
}

type errorJSON struct {
	Errors []string `json:"errors"`
}

// Requests, as far as the emulator reads them.

type deviceCreateRequest struct {
	Hostname              string   `json:"hostname"`
	Plan                  string   `json:"plan"`
	OS                    string   `json:"operating_system"`
	Metro                 string   `json:"metro"`
	Facility              []string `json:"facility"`
	Tags                  []string `json:"tags"`
	HardwareReservationID string   `json:"hardware_reservation_id"`
	ProjectSSHKeys        []string `json:"project_ssh_keys"`
}

type actionRequest struct {
	Type string `json:"type"`
}

type sshKeyCreateRequest struct {
	Label string `json:"label"`
	Key   string `json:"key"`
}
