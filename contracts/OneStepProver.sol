// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title OneStepProver
/// @notice Executes one step of an L2 batch from an agreed pre-commitment and a witness, exactly as
/// btcl2/core/fault/execute.py does (docs/PROTOCOL.md, "Fault proofs"): a deposit credit, a transaction, or
/// the seal step that turns the accumulators into the batch's roots. A dispute game calls `step` on the one
/// step the parties disagree on and compares `post` with the disputed post-commitment; `valid == false` means
/// the operation (or the batch) breaks a rule, so any claim that includes it is wrong.
/// @dev Stateless: a pure function of its arguments and the rollup parameters fixed at deployment. A witness
/// that is malformed or does not match the context, the pre-state, the batch roots or the state root reverts
/// with a custom error: the party who sent it is wrong, not the claim.
///
/// Commitments (all integers big-endian):
///   context    = keccak256(transactionsRoot || txCount u32 || depositsRoot || depositCount u32
///                          || postStateRoot || withdrawalsRoot || exitsRoot)                    (168 bytes)
///   commitment = keccak256(step u64 || stateRoot || withdrawalsAcc || exitsAcc)                  (104 bytes)
/// Witness = context preimage (168) || pre-state preimage (104) || step body, where the body is
///   deposit step (step < depositCount): credit (64) || deposits-root branch || recipient touch
///   tx step: u16 length || signed tx bytes || transactions-root branch || touches (sender, [recipient], fee)
///   seal step (step == depositCount + txCount): u32 n || n withdrawal leaves || u32 m || m exit leaves
/// A branch is the sibling hashes from the leaf level up, one per level where the node has a sibling (its
/// shape follows from the index and the count). A touch is the 16-byte account encoding (balance u64 LE,
/// nonce u64 LE; all zero for an absent account) and an SMT proof in btcl2/core/smt.py's encoding against the
/// current root; the root after each write is recomputed from the same proof.
contract OneStepProver {
    /// @notice Raised when the witness ends before a field it must hold.
    error WitnessTruncated();
    /// @notice Raised when bytes follow the end of a valid step's witness.
    error TrailingWitness();
    /// @notice Raised when the witness's context preimage does not hash to `batchContext`.
    error ContextMismatch();
    /// @notice Raised when the witness's pre-state preimage does not hash to `pre`.
    error PreStateMismatch();
    /// @notice Raised when the pre-state's step is past the batch's seal step.
    error StepOutOfRange(uint64 step);
    /// @notice Raised when the operation and its branch do not hash to the batch's root at this index.
    error OperationNotInBatch(uint64 step);
    /// @notice Raised when an account proof is malformed or does not match the current state root.
    error BadAccountProof(address account);
    /// @notice Raised when the seal step's leaves do not hash to the accumulators.
    error AccumulatorMismatch();
    /// @notice Raised when a deployment parameter is out of range.
    error BadParams();

    uint8 internal constant MALFORMED = 1;
    uint8 internal constant BAD_SIGNATURE = 2;
    uint8 internal constant NON_STANDARD_SCRIPT = 3;
    uint8 internal constant DUST_AMOUNT = 4;
    uint8 internal constant AMOUNT_OVERFLOW = 5;
    uint8 internal constant BAD_NONCE = 6;
    uint8 internal constant INSUFFICIENT_BALANCE = 7;
    uint8 internal constant TOO_MANY_TRANSACTIONS = 8;
    uint8 internal constant WITHDRAWALS_ROOT_MISMATCH = 9;
    uint8 internal constant POST_STATE_ROOT_MISMATCH = 10;
    uint8 internal constant EXITS_ROOT_MISMATCH = 11;
    uint8 internal constant ZERO_RECIPIENT = 12;

    uint256 internal constant MAX_MONEY = 21_000_000 * 100_000_000;
    uint256 internal constant MAX_NONCE = type(uint64).max;
    uint256 internal constant SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
    uint256 internal constant HALF_N = SECP256K1_N / 2;
    uint256 internal constant CONTEXT_SIZE = 168;
    uint256 internal constant STATE_SIZE = 104;
    bytes32 internal constant TRANSFER_TYPEHASH = keccak256("Transfer(address to,uint64 amount,uint64 fee,uint64 nonce)");
    bytes32 internal constant WITHDRAWAL_TYPEHASH =
        keccak256("Withdrawal(uint64 amount,uint64 fee,uint64 nonce,bytes script)");
    bytes32 internal constant EXIT_TYPEHASH =
        keccak256("ExitToEvm(uint64 amount,uint64 fee,uint64 nonce,address evmAddress)");

    /// @notice The EIP-712 domain separator of L2 transactions (name "btcl2", version "1", the L2 chain id).
    bytes32 public immutable domainSeparator;
    /// @notice The L2 address every fee is credited to.
    address public immutable feeAccount;
    /// @notice Deposits below this are invalid.
    uint64 public immutable minDepositSats;
    /// @notice Withdrawals and exits below this are invalid.
    uint64 public immutable minWithdrawalSats;
    /// @notice Most transactions a batch may hold.
    uint32 public immutable maxBatchTxs;

    struct Context {
        bytes32 transactionsRoot;
        uint64 txCount;
        bytes32 depositsRoot;
        uint64 depositCount;
        bytes32 postStateRoot;
        bytes32 withdrawalsRoot;
        bytes32 exitsRoot;
    }

    struct State {
        uint64 step;
        bytes32 root;
        bytes32 withdrawalsAcc;
        bytes32 exitsAcc;
    }

    /// @dev The step being executed: where the witness is read and the running state root.
    struct Run {
        uint256 pos;
        bytes32 root;
        uint8 reason;
    }

    struct Tx {
        uint8 kind;
        address to;
        uint64 amount;
        uint64 fee;
        uint64 nonce;
        uint256 scriptOffset;
        uint256 scriptLength;
        uint256 sigOffset;
    }

    /// @param l2ChainId The chain id of the L2's EIP-712 domain (Params.l2_chain_id).
    /// @param feeAccount_ Params.fee_account.
    /// @param minDepositSats_ Params.min_deposit_sats.
    /// @param minWithdrawalSats_ Params.min_withdrawal_sats.
    /// @param maxBatchTxs_ Params.max_batch_txs.
    constructor(
        uint256 l2ChainId,
        address feeAccount_,
        uint64 minDepositSats_,
        uint64 minWithdrawalSats_,
        uint32 maxBatchTxs_
    ) {
        if (minDepositSats_ > MAX_MONEY || minWithdrawalSats_ > MAX_MONEY) revert BadParams();
        domainSeparator = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId)"),
                keccak256("btcl2"),
                keccak256("1"),
                l2ChainId
            )
        );
        feeAccount = feeAccount_;
        minDepositSats = minDepositSats_;
        minWithdrawalSats = minWithdrawalSats_;
        maxBatchTxs = maxBatchTxs_;
    }

    /// @notice Execute one step of a batch.
    /// @param batchContext keccak256 of the batch context encoding (see the contract's notes).
    /// @param pre The agreed commitment before the step.
    /// @param witness Context preimage, pre-state preimage and the step body.
    /// @return valid False when the step's operation or the batch breaks a rule.
    /// @return reason Why it is invalid (btcl2/core/fault/model.py Reason); 0 when valid.
    /// @return post The commitment after the step; zero when invalid.
    function step(bytes32 batchContext, bytes32 pre, bytes calldata witness)
        external
        view
        returns (bool valid, uint8 reason, bytes32 post)
    {
        if (witness.length < CONTEXT_SIZE + STATE_SIZE) revert WitnessTruncated();
        if (keccak256(witness[:CONTEXT_SIZE]) != batchContext) revert ContextMismatch();
        if (keccak256(witness[CONTEXT_SIZE:CONTEXT_SIZE + STATE_SIZE]) != pre) revert PreStateMismatch();
        Context memory ctx = _context(witness);
        State memory s = _state(witness[CONTEXT_SIZE:CONTEXT_SIZE + STATE_SIZE]);
        if (s.step > ctx.depositCount + ctx.txCount) revert StepOutOfRange(s.step);
        if (ctx.txCount > maxBatchTxs) return (false, TOO_MANY_TRANSACTIONS, bytes32(0));
        Run memory run = Run(CONTEXT_SIZE + STATE_SIZE, s.root, 0);
        if (s.step == ctx.depositCount + ctx.txCount) return _seal(ctx, s, witness, run);
        bytes32 wLeaf;
        bytes32 eLeaf;
        if (s.step < ctx.depositCount) {
            _deposit(ctx, s.step, witness, run);
        } else {
            (wLeaf, eLeaf) = _transaction(ctx, s.step, witness, run);
        }
        if (run.reason != 0) return (false, run.reason, bytes32(0));
        if (run.pos != witness.length) revert TrailingWitness();
        if (wLeaf != bytes32(0)) s.withdrawalsAcc = keccak256(abi.encodePacked(s.withdrawalsAcc, wLeaf));
        if (eLeaf != bytes32(0)) s.exitsAcc = keccak256(abi.encodePacked(s.exitsAcc, eLeaf));
        return (true, 0, commitmentOf(s.step + 1, run.root, s.withdrawalsAcc, s.exitsAcc));
    }

    /// @notice The step commitment of a state: keccak256(step u64 || stateRoot || withdrawalsAcc || exitsAcc).
    function commitmentOf(uint64 stepIndex, bytes32 stateRoot, bytes32 withdrawalsAcc, bytes32 exitsAcc)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encodePacked(stepIndex, stateRoot, withdrawalsAcc, exitsAcc));
    }

    // ------------------------------------------------------------------ witness reading

    function _context(bytes calldata w) internal pure returns (Context memory c) {
        c.transactionsRoot = bytes32(w[0:32]);
        c.txCount = uint32(bytes4(w[32:36]));
        c.depositsRoot = bytes32(w[36:68]);
        c.depositCount = uint32(bytes4(w[68:72]));
        c.postStateRoot = bytes32(w[72:104]);
        c.withdrawalsRoot = bytes32(w[104:136]);
        c.exitsRoot = bytes32(w[136:168]);
    }

    function _state(bytes calldata w) internal pure returns (State memory s) {
        s.step = uint64(bytes8(w[0:8]));
        s.root = bytes32(w[8:40]);
        s.withdrawalsAcc = bytes32(w[40:72]);
        s.exitsAcc = bytes32(w[72:104]);
    }

    function _take(bytes calldata w, Run memory run, uint256 n) internal pure returns (bytes calldata out) {
        if (run.pos + n > w.length) revert WitnessTruncated();
        out = w[run.pos:run.pos + n];
        run.pos += n;
    }

    function _le64(bytes calldata b, uint256 off) internal pure returns (uint64 v) {
        v = uint64(bytes8(b[off:off + 8]));
        v = ((v & 0xFF00FF00FF00FF00) >> 8) | ((v & 0x00FF00FF00FF00FF) << 8);
        v = ((v & 0xFFFF0000FFFF0000) >> 16) | ((v & 0x0000FFFF0000FFFF) << 16);
        v = (v >> 32) | (v << 32);
    }

    function _toLe64(uint64 v) internal pure returns (bytes8) {
        v = ((v & 0xFF00FF00FF00FF00) >> 8) | ((v & 0x00FF00FF00FF00FF) << 8);
        v = ((v & 0xFFFF0000FFFF0000) >> 16) | ((v & 0x0000FFFF0000FFFF) << 16);
        return bytes8((v >> 32) | (v << 32));
    }

    /// @dev Read the branch of leaf `index` of `count` and revert unless it links `leaf` to `root`.
    function _branch(bytes calldata w, Run memory run, bytes32 root, bytes32 leaf, uint256 index, uint256 count)
        internal
        pure
        returns (bool)
    {
        bytes32 node = leaf;
        while (count > 1) {
            if (index ^ 1 < count) {
                bytes32 sibling = bytes32(_take(w, run, 32));
                node = index & 1 == 1 ? _node(sibling, node) : _node(node, sibling);
            }
            index >>= 1;
            count = (count + 1) >> 1;
        }
        return node == root;
    }

    // ------------------------------------------------------------------ hashing

    function _node(bytes32 left, bytes32 right) internal pure returns (bytes32 h) {
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore8(p, 0x01)
            mstore(add(p, 1), left)
            mstore(add(p, 33), right)
            h := keccak256(p, 65)
        }
    }

    function _leaf(address key, bytes32 value) internal pure returns (bytes32 h) {
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore(p, 0)
            mstore(add(p, 1), shl(96, key))
            mstore(add(p, 21), value)
            h := keccak256(p, 53)
        }
    }

    function _accountLeaf(uint64 balance, uint64 nonce) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(_toLe64(balance), _toLe64(nonce)));
    }

    // ------------------------------------------------------------------ accounts (btcl2/core/smt.py)

    struct Proof {
        bytes32[] siblings;
        bool hasLeaf;
        address leafKey;
        bytes32 leafValue;
    }

    function _readProof(bytes calldata w, Run memory run, address key) internal pure returns (Proof memory p) {
        bytes calldata head = _take(w, run, 2);
        uint8 flags = uint8(head[0]);
        uint256 depth = uint8(head[1]);
        if (flags > 1 || depth > 160) revert BadAccountProof(key);
        bytes calldata bitmap = _take(w, run, (depth + 7) / 8);
        if (depth & 7 != 0 && uint8(bitmap[bitmap.length - 1]) & (0xFF >> (depth & 7)) != 0) {
            revert BadAccountProof(key);
        }
        p.siblings = new bytes32[](depth);
        for (uint256 i = 0; i < depth; i++) {
            if (uint8(bitmap[i >> 3]) & (0x80 >> (i & 7)) != 0) {
                bytes32 sibling = bytes32(_take(w, run, 32));
                if (sibling == bytes32(0)) revert BadAccountProof(key);
                p.siblings[i] = sibling;
            }
        }
        if (flags == 1) {
            p.hasLeaf = true;
            p.leafKey = address(bytes20(_take(w, run, 20)));
            p.leafValue = bytes32(_take(w, run, 32));
        }
    }

    function _bit(address key, uint256 depth) internal pure returns (bool) {
        return (uint160(key) >> (159 - depth)) & 1 == 1;
    }

    function _fold(address key, bytes32 node, bytes32[] memory siblings) internal pure returns (bytes32) {
        for (uint256 i = siblings.length; i > 0; i--) {
            node = _bit(key, i - 1) ? _node(siblings[i - 1], node) : _node(node, siblings[i - 1]);
        }
        return node;
    }

    /// @dev Read an account touch and check it against run.root; returns the account and its proof.
    function _read(bytes calldata w, Run memory run, address key)
        internal
        pure
        returns (uint64 balance, uint64 nonce, Proof memory p)
    {
        bytes calldata account = _take(w, run, 16);
        balance = _le64(account, 0);
        nonce = _le64(account, 8);
        p = _readProof(w, run, key);
        uint256 depth = p.siblings.length;
        if (depth > 0 && p.siblings[depth - 1] == bytes32(0)) revert BadAccountProof(key);
        bytes32 terminal;
        if (balance != 0 || nonce != 0) {
            if (p.hasLeaf) revert BadAccountProof(key);
            terminal = _leaf(key, keccak256(account));
        } else if (p.hasLeaf) {
            if (p.leafKey == key) revert BadAccountProof(key);
            // The other leaf must share key's first `depth` bits, or it says nothing about key.
            if (depth > 0 && (uint160(p.leafKey) ^ uint160(key)) >> (160 - depth) != 0) revert BadAccountProof(key);
            terminal = _leaf(p.leafKey, p.leafValue);
        }
        if (_fold(key, terminal, p.siblings) != run.root) revert BadAccountProof(key);
    }

    /// @dev Set the account just read (with proof `p`) to (balance, nonce) and update run.root. The new account
    /// is never empty when the old one was not (credits only add, a debit raises the nonce).
    function _write(Run memory run, address key, Proof memory p, uint64 balance, uint64 nonce) internal pure {
        if (balance == 0 && nonce == 0) return;
        bytes32 node = _leaf(key, _accountLeaf(balance, nonce));
        if (p.hasLeaf) {
            uint256 depth = p.siblings.length;
            uint256 split = depth;
            while (_bit(key, split) == _bit(p.leafKey, split)) split++;
            bytes32 other = _leaf(p.leafKey, p.leafValue);
            node = _bit(key, split) ? _node(other, node) : _node(node, other);
            for (uint256 i = split; i > depth; i--) {
                node = _bit(key, i - 1) ? _node(bytes32(0), node) : _node(node, bytes32(0));
            }
        }
        run.root = _fold(key, node, p.siblings);
    }

    /// @dev Credit `amount` to `key` (transition._credit); sets run.reason on overflow.
    function _credit(bytes calldata w, Run memory run, address key, uint256 amount) internal pure {
        (uint64 balance, uint64 nonce, Proof memory p) = _read(w, run, key);
        if (balance + amount > MAX_MONEY) {
            run.reason = AMOUNT_OVERFLOW;
            return;
        }
        _write(run, key, p, uint64(balance + amount), nonce);
    }

    // ------------------------------------------------------------------ operations

    function _deposit(Context memory ctx, uint64 index, bytes calldata w, Run memory run) internal view {
        bytes calldata credit = _take(w, run, 64);
        if (!_branch(w, run, ctx.depositsRoot, keccak256(credit), index, ctx.depositCount)) {
            revert OperationNotInBatch(index);
        }
        uint64 amount = _le64(credit, 56);
        if (amount > MAX_MONEY) {
            run.reason = MALFORMED;
        } else if (amount < minDepositSats) {
            run.reason = DUST_AMOUNT;
        } else {
            _credit(w, run, address(bytes20(credit[36:56])), amount);
        }
    }

    function _transaction(Context memory ctx, uint64 index, bytes calldata w, Run memory run)
        internal
        view
        returns (bytes32 wLeaf, bytes32 eLeaf)
    {
        (bytes calldata raw, bytes32 txHash) = _txOperation(ctx, index, w, run);
        (bool ok, Tx memory t) = _decode(raw);
        if (!ok) {
            run.reason = MALFORMED;
            return (0, 0);
        }
        address sender = _recover(raw, t);
        if (sender == address(0)) {
            run.reason = BAD_SIGNATURE;
            return (0, 0);
        }
        (wLeaf, eLeaf) = _records(raw, t, txHash, sender, run);
        if (run.reason != 0) return (0, 0);
        _debit(w, run, sender, t);
        if (run.reason != 0) return (0, 0);
        if (t.kind == 1) {
            _credit(w, run, t.to, t.amount);
            if (run.reason != 0) return (0, 0);
        }
        _credit(w, run, feeAccount, t.fee);
    }

    /// @dev Read the transaction bytes and check them against transactionsRoot at this index.
    function _txOperation(Context memory ctx, uint64 index, bytes calldata w, Run memory run)
        internal
        pure
        returns (bytes calldata raw, bytes32 txHash)
    {
        raw = _take(w, run, uint16(bytes2(_take(w, run, 2))));
        txHash = keccak256(raw);
        if (!_branch(w, run, ctx.transactionsRoot, txHash, index - ctx.depositCount, ctx.txCount)) {
            revert OperationNotInBatch(index);
        }
    }

    function _debit(bytes calldata w, Run memory run, address sender, Tx memory t) internal pure {
        uint256 total = uint256(t.amount) + t.fee;
        if (total > MAX_MONEY) {
            run.reason = AMOUNT_OVERFLOW;
            return;
        }
        (uint64 balance, uint64 nonce, Proof memory p) = _read(w, run, sender);
        if (t.nonce != nonce || nonce >= MAX_NONCE) {
            run.reason = BAD_NONCE;
        } else if (balance < total) {
            run.reason = INSUFFICIENT_BALANCE;
        } else {
            _write(run, sender, p, uint64(balance - total), nonce + 1);
        }
    }

    /// @dev The withdrawal or exit leaf of a transaction, after transition.operation_records' checks (script,
    /// recipient, dust).
    function _records(bytes calldata raw, Tx memory t, bytes32 txHash, address sender, Run memory run)
        internal
        view
        returns (bytes32 wLeaf, bytes32 eLeaf)
    {
        if (t.kind == 2) {
            bytes calldata script = raw[t.scriptOffset:t.scriptOffset + t.scriptLength];
            if (!_standardScript(script)) {
                run.reason = NON_STANDARD_SCRIPT;
            } else if (t.amount < minWithdrawalSats) {
                run.reason = DUST_AMOUNT;
            } else {
                wLeaf = keccak256(
                    abi.encodePacked(txHash, sender, _toLe64(t.amount), uint8(script.length), script)
                );
            }
        } else if (t.kind == 3) {
            if (t.to == address(0)) {
                run.reason = ZERO_RECIPIENT;
            } else if (t.amount < minWithdrawalSats) {
                run.reason = DUST_AMOUNT;
            } else {
                eLeaf = keccak256(abi.encodePacked(txHash, sender, _toLe64(t.amount), t.to));
            }
        }
    }

    /// @dev P2PKH, P2SH, P2WPKH, P2WSH or P2TR (transition.WITHDRAWAL_SCRIPT_TYPES, as script.solve sees them).
    function _standardScript(bytes calldata s) internal pure returns (bool) {
        uint256 n = s.length;
        if (n == 25) {
            return s[0] == 0x76 && s[1] == 0xa9 && s[2] == 0x14 && s[23] == 0x88 && s[24] == 0xac;
        }
        if (n == 23) return s[0] == 0xa9 && s[1] == 0x14 && s[22] == 0x87;
        if (n == 22) return s[0] == 0x00 && s[1] == 0x14;
        if (n == 34) return (s[0] == 0x00 || s[0] == 0x51) && s[1] == 0x20;
        return false;
    }

    /// @dev Decode a signed transaction (docs/PROTOCOL.md, "Transactions"); ok false where the Python decoder
    /// raises MalformedEncoding. For an exit, `to` holds the EVM address.
    function _decode(bytes calldata raw) internal pure returns (bool ok, Tx memory t) {
        uint256 n = raw.length;
        if (n == 0) return (false, t);
        t.kind = uint8(raw[0]);
        uint256 body;
        if (t.kind == 1) {
            if (n != 110) return (false, t);
            t.to = address(bytes20(raw[1:21]));
            body = 21;
        } else if (t.kind == 2 || t.kind == 3) {
            body = 1;
        } else {
            return (false, t);
        }
        if (n < body + 24) return (false, t);
        t.amount = _le64(raw, body);
        t.fee = _le64(raw, body + 8);
        t.nonce = _le64(raw, body + 16);
        if (t.amount > MAX_MONEY || t.fee > MAX_MONEY) return (false, t);
        if (t.kind == 2) {
            if (n < 26) return (false, t);
            t.scriptOffset = 26;
            t.scriptLength = uint8(raw[25]);
            if (t.scriptLength > 42 || n != 26 + t.scriptLength + 65) return (false, t);
            t.sigOffset = 26 + t.scriptLength;
        } else if (t.kind == 3) {
            if (n != 110) return (false, t);
            t.to = address(bytes20(raw[25:45]));
            t.sigOffset = 45;
        } else {
            t.sigOffset = 45;
        }
        return (true, t);
    }

    /// @dev The EIP-712 signer of a decoded transaction, or address(0) where eip712.recover_sender raises
    /// BadSignature (v not 27/28, r or s outside 1..n-1, high S, no key recovered).
    function _recover(bytes calldata raw, Tx memory t) internal view returns (address) {
        uint256 o = t.sigOffset;
        uint256 r = uint256(bytes32(raw[o:o + 32]));
        uint256 s = uint256(bytes32(raw[o + 32:o + 64]));
        uint8 v = uint8(raw[o + 64]);
        if (v != 27 && v != 28) return address(0);
        if (r == 0 || r >= SECP256K1_N || s == 0 || s >= SECP256K1_N || s > HALF_N) return address(0);
        bytes32 structHash;
        if (t.kind == 1) {
            structHash = keccak256(abi.encode(TRANSFER_TYPEHASH, t.to, t.amount, t.fee, t.nonce));
        } else if (t.kind == 2) {
            bytes32 scriptHash = keccak256(raw[t.scriptOffset:t.scriptOffset + t.scriptLength]);
            structHash = keccak256(abi.encode(WITHDRAWAL_TYPEHASH, t.amount, t.fee, t.nonce, scriptHash));
        } else {
            structHash = keccak256(abi.encode(EXIT_TYPEHASH, t.amount, t.fee, t.nonce, t.to));
        }
        bytes32 digest = keccak256(abi.encodePacked(bytes2(0x1901), domainSeparator, structHash));
        return ecrecover(digest, v, bytes32(r), bytes32(s));
    }

    // ------------------------------------------------------------------ seal

    function _seal(Context memory ctx, State memory s, bytes calldata w, Run memory run)
        internal
        pure
        returns (bool, uint8, bytes32)
    {
        bytes32[] memory withdrawals = _leaves(w, run, s.withdrawalsAcc);
        bytes32[] memory exits = _leaves(w, run, s.exitsAcc);
        if (run.pos != w.length) revert TrailingWitness();
        if (_merkleRoot(withdrawals) != ctx.withdrawalsRoot) return (false, WITHDRAWALS_ROOT_MISMATCH, 0);
        if (s.root != ctx.postStateRoot) return (false, POST_STATE_ROOT_MISMATCH, 0);
        if (_merkleRoot(exits) != ctx.exitsRoot) return (false, EXITS_ROOT_MISMATCH, 0);
        return (true, 0, commitmentOf(s.step + 1, s.root, ctx.withdrawalsRoot, ctx.exitsRoot));
    }

    /// @dev Read u32 n and n leaves; revert unless their hash chain from zero is `acc`.
    function _leaves(bytes calldata w, Run memory run, bytes32 acc) internal pure returns (bytes32[] memory out) {
        uint256 n = uint32(bytes4(_take(w, run, 4)));
        bytes calldata data = _take(w, run, n * 32);
        out = new bytes32[](n);
        bytes32 folded;
        for (uint256 i = 0; i < n; i++) {
            bytes32 leaf = bytes32(data[i * 32:i * 32 + 32]);
            out[i] = leaf;
            assembly ("memory-safe") {
                // keccak256(folded || leaf) in the scratch space: no memory is allocated per leaf.
                mstore(0x00, folded)
                mstore(0x20, leaf)
                folded := keccak256(0x00, 0x40)
            }
        }
        if (folded != acc) revert AccumulatorMismatch();
    }

    /// @dev btcl2/core/merkle.py merkle_root: 0x01-prefixed nodes, an odd last node moves up; zero when empty.
    function _merkleRoot(bytes32[] memory level) internal pure returns (bytes32) {
        uint256 n = level.length;
        if (n == 0) return bytes32(0);
        while (n > 1) {
            uint256 half = n >> 1;
            for (uint256 i = 0; i < half; i++) {
                level[i] = _node(level[2 * i], level[2 * i + 1]);
            }
            if (n & 1 == 1) level[half] = level[n - 1];
            n = half + (n & 1);
        }
        return level[0];
    }
}
