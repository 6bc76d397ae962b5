-- Tag: the SSH host key the shepherd pinned on its first connection to a
-- machine (trust on first use). Later connections presenting another key are
-- refused; an operator who reinstalled the machine deletes the pin.
CREATE TABLE machine_ssh_host_key (
    machine_id uuid PRIMARY KEY REFERENCES machines ON DELETE CASCADE,
    -- The key in SSH wire format (ssh.PublicKey.Marshal).
    ssh_host_key bytea NOT NULL,
    ssh_host_key_pinned_at timestamptz NOT NULL DEFAULT now()
);
