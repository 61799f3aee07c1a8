"""Key prefixes of every LevelDB database btcl2 keeps, in one place so none collide."""

# The embedded regtest node's index (DIR/regtest/btcl2-index).
REGTEST_BLOCK = b"B"  # block hash -> raw block
REGTEST_HEADER = b"H"  # block hash -> HeaderEntry
REGTEST_COIN = b"U"  # outpoint (txid + vout LE32) -> Coin
REGTEST_UNDO = b"D"  # block hash -> spent coins of the block, in input order
REGTEST_TX = b"T"  # txid -> hash of the active-chain block that holds it
REGTEST_INVALID = b"I"  # block hash -> b"" for blocks marked invalid by invalidateblock
REGTEST_TIP = b"t"  # -> hash of the block the coin index is at
REGTEST_SEQUENCE = b"s"  # -> next block arrival sequence number (tie-break between equal-work tips)

# The Bitcoin watcher's database (btcl2/watcher): its header chain, event log and delivery progress.
WATCHER_HEIGHT = b"wh"  # height (u32 BE) -> block hash of our chain at that height
WATCHER_BLOCK = b"wb"  # block hash -> BlockRecord (height, header, deposit txs, confirmed flag)
WATCHER_TIP = b"wt"  # -> block hash of our tip
WATCHER_EVENT = b"we"  # sequence number (u64 BE) -> encoded event, kept until delivery is acknowledged
WATCHER_NEXT_SEQ = b"ws"  # -> next event sequence number (u64 BE)
WATCHER_DELIVERED = b"wd"  # -> first sequence number not yet known to be delivered (u64 BE)

# The sequencer's database (btcl2/sequencer): sealed batches, their indexes, the state tree, deposits.
# Every sealed batch and the state it produces are written in one atomic batch (see btcl2/sequencer/store.py).
SEQ_META = b"Sm"  # name -> value: head batch number, last applied watcher event, start height
SEQ_BATCH = b"Sb"  # batch number (u64 BE) -> Batch encoding
SEQ_TX = b"St"  # tx hash -> TxRecord (status, batch, index, sender, reason)
SEQ_NODE = b"Sn"  # SMT node hash -> node encoding (hash preimage); never deleted, so old roots stay readable
SEQ_ACCOUNT = b"Sa"  # account leaf value (keccak256 of the encoding) -> Account encoding (16 bytes)
SEQ_WITHDRAWAL = b"Sw"  # withdrawal id -> WithdrawalRecord encoding
SEQ_DEPOSIT = b"Sd"  # outpoint (txid + vout u32 LE) -> DepositRecord
SEQ_BLOCK_DEPOSIT = (
    b"Sk"  # block hash + outpoint -> b"": deposits seen in a block, to drop them on disconnect
)
SEQ_RETURNED = b"Sr"  # tx hash -> order (u64 BE) + TxRecord: rolled back, not yet sealed again
SEQ_MEMPOOL = b"Sq"  # tx hash -> arrival time (u64 BE, ns) + SignedTx: every pending transaction
SEQ_PENDING = b"Sp"  # height (u32 BE) + position (u32 BE) -> outpoint: confirmed deposits not yet credited
SEQ_OWED = b"So"  # outpoint -> DepositRecord as credited: reorged out after credit, not credited again yet

# The replay's derived state (btcl2/derive/store.py, `btcl2 replay --datadir`): one atomic batch per replayed batch.
DERIVE_META = b"Rm"  # name -> value: head batch number, start height
DERIVE_HEADER = b"Rh"  # batch number (u64 BE) -> BatchHeader encoding
DERIVE_NODE = b"Rn"  # SMT node hash -> node encoding
DERIVE_ACCOUNT = b"Ra"  # account leaf value -> Account encoding
DERIVE_WITHDRAWAL = b"Rw"  # withdrawal id -> WithdrawalRecord encoding
DERIVE_DEPOSIT = b"Rd"  # outpoint -> credited deposit

# The relayer's journal (btcl2/bridge/journal.py, DIR/relayer): EVM transactions written before they are sent,
# and the deposits it mints. An entry and the deposit change it causes are written in one atomic batch.
RELAYER_META = b"Em"  # name -> value: last applied watcher event, next journal id
RELAYER_TX = b"Et"  # journal id (u64 BE) -> TxEntry (purpose, subject, nonce, signed versions, status)
RELAYER_OPEN = b"Eo"  # journal id (u64 BE) -> b"": entries still pending (at most one)
RELAYER_DEPOSIT = b"Ed"  # outpoint (txid + vout u32 BE) -> DepositRecord (status, block, raw tx, mint tx)
RELAYER_QUEUE = b"Eq"  # height (u32 BE) + outpoint -> b"": confirmed EVM deposits waiting for their mint
RELAYER_UNSETTLED = b"Eu"  # outpoint -> b"": minted deposits whose mint an EVM reorg may still undo

# The poster's journal (btcl2/poster/journal.py): every anchor transaction it signs, written before it is sent.
POSTER_TX = b"Pt"  # batch number (u64 BE) + chunk (u16 BE) + version (u16 BE) -> JournalEntry
POSTER_STALE = b"Ps"  # POSTER_TX's key + txid -> JournalEntry of a batch version the sequencer sealed again
POSTER_META = b"Pm"  # name -> value: next batch to post (u64 BE), last seen Bitcoin tip height (u64 BE)

# The federation (btcl2/federation/store.py): a signer's record of what it signed, and the coordinator's
# payout journal. Each signature and each payout step is one atomic, synced write.
FED_SIGNED = b"Fs"  # payout txid -> fee u64 LE || unsigned payout encoding
FED_SIGNED_REF = b"Fr"  # withdrawal ref (kind u8 || id 32) -> txid of the last payout signed for it
FED_SIGNED_INPUT = b"Fi"  # outpoint (txid + vout u32 LE) -> txid of the last payout signed spending it
FED_SIGNER_REBUILT = b"Fm"  # -> Bitcoin height u32 BE up to which the record was rebuilt from the chain
FED_SIGNED_ORIGINS = b"Fo"  # payout txid -> JSON PayoutOrigins (btcl2/federation/death.py) seen when signing
FED_SIGNED_REBUILD = b"Fb"  # payout txid -> txids of the payouts it supersedes (32 bytes each)
FED_COORD_META = b"Cm"  # b"active" / b"next" -> payout number u64 BE
FED_COORD_PAYOUT = b"Cp"  # payout number u64 BE -> JSON journal entry
FED_COORD_WITHDRAWAL = b"Cw"  # withdrawal ref -> number of the latest payout carrying it
FED_COORD_PAID = b"Cd"  # withdrawal ref -> txid of the payout that paid it (F confirmations)

# The relayer's batch attestations (btcl2/bridge/journal.py): each submitAttestation is journaled with its record.
RELAYER_ATTEST = b"Ea"  # batch number (u64 BE) -> AttestRecord (Bitcoin txid, status, journal id, EVM tx)
RELAYER_ATTEST_UNSETTLED = b"Ev"  # batch number (u64 BE) -> b"": attested, an EVM reorg may still undo it

# The poster's attestation journal (btcl2/poster/attest.py), in the poster's database: written before broadcast.
POSTER_ATTEST_META = b"Pa"  # b"next" -> next batch to attest (u64 BE)
POSTER_ATTEST_TX = b"Pb"  # attestation txid (display-order hex, ASCII) -> JSON {hex, batches}: not yet buried
