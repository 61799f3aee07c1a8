// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {BitcoinTx} from "./BitcoinTx.sol";
import {AttestationTx} from "./AttestationTx.sol";

/// @notice What the Bridge reads from the light client.
interface IBitcoinLightClient {
    function confirmations(bytes32 blockHash) external view returns (uint256);
    function merkleRootOf(bytes32 blockHash) external view returns (bytes32);
}

/// @notice What the Bridge calls on the token.
interface IWrappedBTC {
    function bridge() external view returns (address);
    function balanceOf(address holder) external view returns (uint256);
    function mint(address to, uint256 value) external;
    function burn(address from, uint256 value) external;
}

/// @notice What the Bridge calls to check a batch attestation (AttestationVerifier.sol); reverts when invalid.
interface IAttestationVerifier {
    function verify(
        uint64 batchNumber,
        bytes32 batchHash,
        bytes32 postStateRoot,
        bytes32 exitsRoot,
        uint32 signers,
        bytes calldata signature
    ) external view;
}

/// @title Bridge
/// @notice Mints WBTC against SPV proofs of Bitcoin deposits to the federation, and burns WBTC for withdrawals
/// the federation pays on Bitcoin. Anyone may submit a proof: the contract trusts only the light client's best
/// chain, K confirmations and the deposit rules of docs/PROTOCOL.md.
/// @dev Roles: the owner (two-step transfer) changes the guardian, the payout confirmer, the mint cap and the
/// attestation verifier, and hands over ownership, each only through the admin timelock (queue, wait adminDelay,
/// execute; all in public events), and unpauses; the guardian pauses; the payout confirmer (the federation's
/// EVM address) records payouts.
contract Bridge {
    /// @notice Raised when the caller lacks the role the function needs.
    error NotOwner(address caller);
    error NotPendingOwner(address caller);
    error NotGuardian(address caller);
    error NotPayoutConfirmer(address caller);
    /// @notice Raised by mint and burn while the guardian has paused the Bridge.
    error BridgePaused();
    /// @notice Raised when unpause is called on a running Bridge or pause on a paused one.
    error PauseStateUnchanged(bool paused);
    /// @notice Raised when a constructor or setter argument is unusable.
    error InvalidConfiguration();
    /// @notice Raised when the block is unknown to the light client or not on its best chain.
    error BlockNotInBestChain(bytes32 blockHash);
    /// @notice Raised when the block has fewer than minConfirmations confirmations.
    error InsufficientConfirmations(bytes32 blockHash, uint256 confirmations, uint256 required);
    /// @notice Raised when the Merkle branch does not lead from the txid to the block's Merkle root.
    error BadMerkleProof(bytes32 txid, bytes32 blockHash);
    /// @notice Raised when txIndex does not fit the branch length, or is 0 (the coinbase).
    error BadTxIndex(uint256 txIndex, uint256 proofLength);
    /// @notice Raised when the deposit's branch and the coinbase's branch differ in length: every leaf of
    /// Bitcoin's Merkle tree is at the same depth, so a longer branch passes through an inner node posing as a
    /// transaction (or a 64-byte transaction posing as an inner node).
    error MerkleDepthMismatch(uint256 proofLength, uint256 coinbaseProofLength);
    /// @notice Raised when the coinbase's branch (index 0) does not lead to the block's Merkle root.
    error BadCoinbaseProof(bytes32 coinbaseTxid, bytes32 blockHash);
    /// @notice Raised when outputIndex is not an output of the transaction.
    error OutputIndexOutOfRange(uint256 outputIndex, uint256 outputCount);
    /// @notice Raised when output outputIndex does not pay the federation script.
    error NotFederationOutput(uint256 outputIndex);
    /// @notice Raised when an earlier output of the same transaction pays the federation (only the first counts).
    error NotFirstFederationOutput(uint256 outputIndex, uint256 firstFederationOutput);
    error CoinbaseDeposit();
    error NoDepositTag();
    error MultipleDepositTags(uint256 count);
    error MalformedDepositTag();
    /// @notice Raised when the tag names an L2 account: such deposits are credited by the rollup, never here.
    error NotAnEvmDeposit(uint8 kind);
    error BelowMinimumDeposit(uint64 amount, uint64 minimum);
    /// @notice Raised when the outpoint (txid, vout) was minted before.
    error AlreadyMinted(bytes32 txid, uint256 vout);
    /// @notice Raised when a mint exceeds what the token bucket holds now.
    error MintCapExceeded(uint64 amount, uint256 available);
    /// @notice Raised when burn's script is not exactly P2PKH, P2SH, P2WPKH, P2WSH or P2TR.
    error NonStandardScript();
    error BelowMinimumWithdrawal(uint64 amount, uint64 minimum);
    error InsufficientBalance(address holder, uint256 balance, uint64 amount);
    /// @notice Raised by confirmPayout for an id no burn on this chain carries (e.g. a burn reorged out).
    error UnknownWithdrawal(bytes32 id);
    error PayoutAlreadyConfirmed(bytes32 id, bytes32 btcTxid);
    error ZeroTxid();

    // --- admin timelock (docs/PROTOCOL.md, "Admin timelock") ---
    /// @notice Raised when an admin setter is called other than by executeAdminAction.
    error NotTimelock(address caller);
    /// @notice Raised when queueAdminAction is given a call that is not one of the admin setters.
    error NotATimelockedAction(bytes4 selector);
    error AdminActionAlreadyQueued(bytes32 id);
    error AdminActionNotQueued(bytes32 id);
    /// @notice Raised when executeAdminAction comes before the action's eta.
    error AdminActionNotReady(bytes32 id, uint256 eta);
    /// @notice Raised when executeAdminAction comes after eta + ADMIN_GRACE_PERIOD: queue it again.
    error AdminActionExpired(bytes32 id, uint256 eta);

    // --- attestations and exits (docs/PROTOCOL.md, "Attestations", "Exits to the EVM") ---
    error NoAttestationVerifier();
    error BatchAlreadyAttested(uint64 batchNumber, bytes32 batchHash);
    error BatchNotAttested(uint64 batchNumber);
    error MalformedExitRecord(uint256 length);
    error BadExitProof(bytes32 exitId, uint64 batchNumber);
    error ExitAlreadyMinted(bytes32 exitId);

    /// @notice An SPV proof that a Bitcoin transaction is K deep in the light client's best chain, naming one
    /// of its outputs (submitAttestation: the anchor's commitment output, the attestation record's output).
    struct TxProof {
        bytes rawTx; // legacy serialization (no witnesses): its double SHA-256 is the txid
        bytes32[] merkleProof; // siblings from the txid up, as for mintWithProof
        bytes32 blockHash; // the block holding it, internal byte order
        uint256 txIndex; // its position in the block (not 0: the coinbase)
        uint256 outputIndex; // the output naming the batch
        bytes coinbaseTx; // the block's coinbase (legacy serialization), proven at index 0 to fix the depth
        bytes32[] coinbaseProof; // its branch: exactly as long as merkleProof
    }

    /// @notice WBTC minted for the deposit outpoint (btcTxid, vout) proven in blockHash.
    event Minted(bytes32 indexed btcTxid, uint32 vout, address indexed recipient, uint64 amount, bytes32 indexed blockHash);
    /// @notice `from` burnt `amount` WBTC, to be paid on Bitcoin to `script`; `nonce` counts `from`'s burns and
    /// `id` = withdrawalId(from, amount, script, nonce) binds the withdrawal to its content (docs/PROTOCOL.md).
    event WithdrawalRequested(bytes32 indexed id, address indexed from, uint64 amount, bytes script, uint256 nonce);
    /// @notice The payout confirmer reports withdrawal `id` paid on Bitcoin by `btcTxid` (internal byte order).
    /// A hint for users: signers read payouts from Bitcoin, never from this event.
    event PayoutConfirmed(bytes32 indexed id, bytes32 btcTxid);
    /// @notice The attestation verifier was set (at deploy, or by the timelock; zero disables attestations).
    event AttestationVerifierSet(address indexed verifier);
    /// @notice The owner queued admin call `call` (id = keccak256(call)), executable from `eta`.
    event AdminActionQueued(bytes32 indexed id, bytes call, uint256 eta);
    /// @notice A queued admin call was executed.
    event AdminActionExecuted(bytes32 indexed id, bytes call);
    /// @notice The owner cancelled a queued admin call.
    event AdminActionCancelled(bytes32 indexed id);
    /// @notice Batch `batchNumber` carries a valid aggregate attestation of at least M federation signers.
    event BatchAttested(
        uint64 indexed batchNumber, bytes32 batchHash, bytes32 postStateRoot, bytes32 exitsRoot, uint32 signers
    );
    /// @notice The attestation of `batchNumber` whose anchor was in `staleAnchorBlock` was replaced: that block
    /// left the light client's best chain, and a K-deep anchor and record of (possibly) another version were proven.
    event AttestationReplaced(uint64 indexed batchNumber, bytes32 staleBatchHash, bytes32 staleAnchorBlock);
    /// @notice WBTC minted for the L2 exit `exitId` proven against the attested exits root of `batchNumber`.
    event ExitMinted(bytes32 indexed exitId, uint64 indexed batchNumber, address indexed recipient, uint64 amount);
    event Paused(address indexed by);
    event Unpaused(address indexed by);
    event MintCapChanged(uint128 capacity, uint128 refillPerSecond);
    event GuardianChanged(address indexed previous, address indexed next);
    event PayoutConfirmerChanged(address indexed previous, address indexed next);
    event OwnershipTransferStarted(address indexed previousOwner, address indexed newOwner);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    IBitcoinLightClient public immutable lightClient;
    IWrappedBTC public immutable wbtc;
    bytes32 public immutable federationScriptHash;
    uint256 public immutable minConfirmations;
    uint64 public immutable minDepositSats;
    uint64 public immutable minWithdrawalSats;
    /// @notice The EVM block this Bridge was deployed in: event scans start here.
    uint256 public immutable deployBlock;
    /// @notice The federation's P2WSH scriptPubKey every deposit pays.
    bytes public federationScript;

    address public owner;
    address public pendingOwner;
    address public guardian;
    address public payoutConfirmer;
    bool public paused;

    uint128 public mintCapCapacity;
    uint128 public mintCapRefillPerSecond;
    uint128 private _bucketTokens;
    uint64 private _bucketUpdatedAt;

    /// @notice Whether the outpoint (btcTxid, vout) has been minted.
    mapping(bytes32 => mapping(uint256 => bool)) public minted;
    /// @notice Number of withdrawals requested so far (a statistic: ids are never counters).
    uint256 public withdrawalCount;
    /// @notice Burns made so far by each address: the nonce of its next burn.
    mapping(address => uint256) public burnNonce;
    /// @notice keccak256(abi.encode(from, amount, script)) of each withdrawal by id (zero: no such burn).
    mapping(bytes32 => bytes32) public withdrawalHash;
    /// @notice The Bitcoin payout the confirmer reported for each withdrawal (zero until reported; a hint only).
    mapping(bytes32 => bytes32) public payoutTxid;

    /// @notice The constructor's role holders and admin delay.
    struct Roles {
        address guardian; // may pause
        address payoutConfirmer; // may confirm payouts (the federation's EVM address)
        address attestationVerifier; // checks batch attestations; zero: attestations and exits disabled
        uint256 adminDelay; // seconds every admin change waits between queue and execute, >= MIN_ADMIN_DELAY
    }

    /// @notice An L2 batch the federation attested.
    struct AttestedBatch {
        bytes32 batchHash;
        bytes32 postStateRoot;
        bytes32 exitsRoot;
    }

    /// @notice Checks batch attestations; set at deploy, changed only by the timelock (zero: attestations and
    /// exits are disabled).
    IAttestationVerifier public attestationVerifier;

    /// @notice The least adminDelay a Bridge may be deployed with.
    uint256 public constant MIN_ADMIN_DELAY = 1 hours;
    /// @notice How long after its eta a queued admin call stays executable.
    uint256 public constant ADMIN_GRACE_PERIOD = 14 days;
    /// @notice Seconds between queueing an admin call and executing it.
    uint256 public immutable adminDelay;
    /// @notice The eta of each queued admin call by id (keccak256 of the call); zero if not queued.
    mapping(bytes32 => uint256) public adminActionEta;
    /// @notice The attested L2 batches by number (batchHash zero: not attested).
    mapping(uint64 => AttestedBatch) public attestedBatch;
    /// @notice The Bitcoin block of the anchor proven with each attested batch (internal byte order).
    mapping(uint64 => bytes32) public attestedAnchorBlock;
    /// @notice Whether the L2 exit (its L2 tx hash) has been minted.
    mapping(bytes32 => bool) public exitMinted;

    /// @param lightClient_ The BitcoinLightClient holding the headers proofs refer to.
    /// @param wbtc_ The WrappedBTC token, deployed with this Bridge's address as its bridge.
    /// @param federationScript_ The federation's scriptPubKey.
    /// @param minConfirmations_ K: confirmations a deposit's block needs (>= 1).
    /// @param minDepositSats_ Deposits below this are never minted (PROTOCOL.md min_deposit_sats).
    /// @param minWithdrawalSats_ Smallest burn, keeping payouts above Bitcoin's dust limit.
    /// @param roles The guardian, the payout confirmer, the attestation verifier and the admin delay.
    /// @param capacity Token bucket size: the most WBTC base units mintable at once.
    /// @param refillPerSecond Base units the bucket regains per second, up to its capacity.
    constructor(
        address lightClient_,
        address wbtc_,
        bytes memory federationScript_,
        uint256 minConfirmations_,
        uint64 minDepositSats_,
        uint64 minWithdrawalSats_,
        Roles memory roles,
        uint128 capacity,
        uint128 refillPerSecond
    ) {
        if (
            lightClient_ == address(0) || wbtc_ == address(0) || federationScript_.length == 0 || minConfirmations_ == 0
                || roles.guardian == address(0) || roles.payoutConfirmer == address(0)
                || IWrappedBTC(wbtc_).bridge() != address(this) || roles.adminDelay < MIN_ADMIN_DELAY
        ) revert InvalidConfiguration();
        adminDelay = roles.adminDelay;
        attestationVerifier = IAttestationVerifier(roles.attestationVerifier);
        lightClient = IBitcoinLightClient(lightClient_);
        wbtc = IWrappedBTC(wbtc_);
        federationScript = federationScript_;
        federationScriptHash = keccak256(federationScript_);
        minConfirmations = minConfirmations_;
        minDepositSats = minDepositSats_;
        minWithdrawalSats = minWithdrawalSats_;
        deployBlock = block.number;
        owner = msg.sender;
        guardian = roles.guardian;
        payoutConfirmer = roles.payoutConfirmer;
        mintCapCapacity = capacity;
        mintCapRefillPerSecond = refillPerSecond;
        _bucketTokens = capacity;
        _bucketUpdatedAt = uint64(block.timestamp);
        emit OwnershipTransferred(address(0), msg.sender);
        emit GuardianChanged(address(0), roles.guardian);
        emit PayoutConfirmerChanged(address(0), roles.payoutConfirmer);
        emit MintCapChanged(capacity, refillPerSecond);
        emit AttestationVerifierSet(roles.attestationVerifier);
    }

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    /// @dev The admin setters run only as executeAdminAction's call to this contract.
    modifier onlyTimelock() {
        if (msg.sender != address(this)) revert NotTimelock(msg.sender);
        _;
    }

    modifier whenNotPaused() {
        if (paused) revert BridgePaused();
        _;
    }

    /// @notice Mint WBTC for a Bitcoin deposit proven by SPV.
    /// @param rawTx The deposit transaction in legacy serialization (no marker, flag or witnesses), whose double
    /// SHA-256 is its txid; the relayer strips witnesses.
    /// @param merkleProof Sibling hashes from the txid up to the Merkle root (bottom up, internal byte order).
    /// @param blockHash The block containing the transaction (internal byte order).
    /// @param txIndex Position of the transaction in the block; its bits say, level by level, on which side the
    /// sibling lies. Must be below 2**merkleProof.length and not 0 (the coinbase).
    /// @param outputIndex The output paying the federation: the first such output of the transaction.
    /// @param coinbaseTx The block's coinbase transaction (legacy serialization), proven at index 0 to fix the
    /// tree's depth (docs/PROTOCOL.md, "SPV proofs").
    /// @param coinbaseProof The coinbase's Merkle branch: exactly as long as merkleProof.
    function mintWithProof(
        bytes calldata rawTx,
        bytes32[] calldata merkleProof,
        bytes32 blockHash,
        uint256 txIndex,
        uint256 outputIndex,
        bytes calldata coinbaseTx,
        bytes32[] calldata coinbaseProof
    ) external whenNotPaused {
        uint256 confs = lightClient.confirmations(blockHash);
        if (confs == 0) revert BlockNotInBestChain(blockHash);
        if (confs < minConfirmations) revert InsufficientConfirmations(blockHash, confs, minConfirmations);
        BitcoinTx.Deposit memory d = BitcoinTx.parseDeposit(rawTx, federationScriptHash, outputIndex);
        _checkInclusion(d.txid, merkleProof, blockHash, txIndex);
        _checkDepth(merkleProof.length, coinbaseTx, coinbaseProof, blockHash);
        _checkDeposit(d, outputIndex);
        if (minted[d.txid][outputIndex]) revert AlreadyMinted(d.txid, outputIndex);
        _takeFromBucket(d.amount);
        minted[d.txid][outputIndex] = true;
        emit Minted(d.txid, uint32(outputIndex), d.recipient, d.amount, blockHash);
        wbtc.mint(d.recipient, d.amount);
    }

    /// @notice Burn `amount` of the caller's WBTC and request its payout on Bitcoin to `btcScript`.
    /// @param amount Base units (satoshis), at least minWithdrawalSats.
    /// @param btcScript The scriptPubKey to pay: exactly P2PKH, P2SH, P2WPKH, P2WSH or P2TR.
    /// @return id The withdrawal id, withdrawalId(msg.sender, amount, btcScript, nonce) (also in the event).
    function burn(uint64 amount, bytes calldata btcScript) external whenNotPaused returns (bytes32 id) {
        if (amount < minWithdrawalSats) revert BelowMinimumWithdrawal(amount, minWithdrawalSats);
        if (!BitcoinTx.isStandardScript(btcScript)) revert NonStandardScript();
        uint256 balance = wbtc.balanceOf(msg.sender);
        if (balance < amount) revert InsufficientBalance(msg.sender, balance, amount);
        uint256 nonce = burnNonce[msg.sender]++;
        id = withdrawalId(msg.sender, amount, btcScript, nonce);
        withdrawalCount++;
        withdrawalHash[id] = keccak256(abi.encode(msg.sender, amount, btcScript));
        emit WithdrawalRequested(id, msg.sender, amount, btcScript, nonce);
        wbtc.burn(msg.sender, amount);
    }

    /// @notice The id of `from`'s burn number `nonce` of `amount` to `btcScript` on this Bridge and chain.
    /// @dev Content-bound, never a global counter: an EVM reorg that drops a burn cannot hand its id to another
    /// burner's burn (the id commits to the burner, amount, script and the burner's own nonce), and the same
    /// burn sent again after a reorg gets the same id, which Bitcoin shows paid at most once.
    function withdrawalId(address from, uint64 amount, bytes calldata btcScript, uint256 nonce)
        public
        view
        returns (bytes32)
    {
        return keccak256(abi.encode(block.chainid, address(this), from, amount, btcScript, nonce));
    }

    /// @notice Report that withdrawal `id` was paid on Bitcoin by `btcTxid`; payout confirmer only, once per id.
    /// A hint for users and explorers: signers decide "paid" from Bitcoin alone.
    function confirmPayout(bytes32 id, bytes32 btcTxid) external {
        if (msg.sender != payoutConfirmer) revert NotPayoutConfirmer(msg.sender);
        if (withdrawalHash[id] == bytes32(0)) revert UnknownWithdrawal(id);
        if (payoutTxid[id] != bytes32(0)) revert PayoutAlreadyConfirmed(id, payoutTxid[id]);
        if (btcTxid == bytes32(0)) revert ZeroTxid();
        payoutTxid[id] = btcTxid;
        emit PayoutConfirmed(id, btcTxid);
    }

    /// @notice Replace the attestation verifier (e.g. new federation keys); timelock only.
    function setAttestationVerifier(address verifier) external onlyTimelock {
        if (verifier == address(0)) revert InvalidConfiguration();
        attestationVerifier = IAttestationVerifier(verifier);
        emit AttestationVerifierSet(verifier);
    }

    /// @notice Record an L2 batch attested by at least M federation signers; anyone may submit, with SPV
    /// proofs that the batch's anchor and the attestation record are both K (minConfirmations) deep in the
    /// light client's best chain (docs/PROTOCOL.md "Attestations", "EVM").
    /// @dev Checked: each transaction's inclusion and depth, the anchor's commitment output naming (batch number,
    /// batch hash, post-state root), the record output naming exactly the submitted fields, and the aggregate.
    /// Not checked: the poster's P2WPKH signature on the first input (the legacy bytes carry no witness, and the
    /// spent output is not proven); the federation's signature over (batch hash, roots), given only once its
    /// members' own replays applied the batch K deep, binds the content. An attestation whose anchor block left
    /// the best chain may be replaced by a proven one (AttestationReplaced); otherwise BatchAlreadyAttested.
    /// @param signers Bitmap of the signers (bit i = attestation key i).
    /// @param signature The aggregate BLS signature, uncompressed G2 (256 bytes, EIP-2537 encoding).
    /// @param anchor An anchor transaction of the batch (the relayer proves the chunk mined last).
    /// @param record The attestation transaction carrying this record.
    function submitAttestation(
        uint64 batchNumber,
        bytes32 batchHash,
        bytes32 postStateRoot,
        bytes32 exitsRoot,
        uint32 signers,
        bytes calldata signature,
        TxProof calldata anchor,
        TxProof calldata record
    ) external {
        if (address(attestationVerifier) == address(0)) revert NoAttestationVerifier();
        (bytes32 known, bytes32 knownBlock) = _replaceableAttestation(batchNumber);
        _checkAttestationTxs(batchNumber, [batchHash, postStateRoot, exitsRoot], signers, anchor, record);
        attestationVerifier.verify(batchNumber, batchHash, postStateRoot, exitsRoot, signers, signature);
        if (known != bytes32(0)) emit AttestationReplaced(batchNumber, known, knownBlock);
        attestedBatch[batchNumber] = AttestedBatch(batchHash, postStateRoot, exitsRoot);
        attestedAnchorBlock[batchNumber] = anchor.blockHash;
        emit BatchAttested(batchNumber, batchHash, postStateRoot, exitsRoot, signers);
    }

    /// @dev The attestation held for `batchNumber` (zero: none); reverts BatchAlreadyAttested while its anchor's
    /// block is on the light client's best chain.
    function _replaceableAttestation(uint64 batchNumber) private view returns (bytes32 known, bytes32 knownBlock) {
        known = attestedBatch[batchNumber].batchHash;
        knownBlock = attestedAnchorBlock[batchNumber];
        if (known != bytes32(0) && lightClient.confirmations(knownBlock) != 0) {
            revert BatchAlreadyAttested(batchNumber, known);
        }
    }

    /// @dev Both transactions K deep; the anchor's commitment names (number, batch hash, post-state root), the
    /// record names exactly (number, roots, signers).
    function _checkAttestationTxs(
        uint64 batchNumber,
        bytes32[3] memory roots,
        uint32 signers,
        TxProof calldata anchor,
        TxProof calldata record
    ) private view {
        _checkDeepInclusion(anchor);
        AttestationTx.checkCommitment(anchor.rawTx, anchor.outputIndex, batchNumber, roots[0], roots[1]);
        _checkDeepInclusion(record);
        AttestationTx.checkRecord(record.rawTx, record.outputIndex, batchNumber, roots, signers);
    }

    /// @notice Mint WBTC for an L2 exit proven against the attested exits root of its batch; anyone may submit,
    /// each exit is minted once.
    /// @param record The 80-byte exit record: exit id (32), L2 sender (20), amount u64 little-endian, recipient (20).
    /// @param siblings Merkle siblings from the leaf up (levels where the node moves up alone have none).
    /// @param sides Bit i set: siblings[i] is the left input of keccak256(0x01 || left || right).
    function mintExit(uint64 batchNumber, bytes calldata record, bytes32[] calldata siblings, uint256 sides)
        external
        whenNotPaused
    {
        bytes32 root = attestedBatch[batchNumber].exitsRoot;
        if (attestedBatch[batchNumber].batchHash == bytes32(0)) revert BatchNotAttested(batchNumber);
        if (record.length != 80) revert MalformedExitRecord(record.length);
        bytes32 exitId = bytes32(record[0:32]);
        bytes32 node = keccak256(record);
        for (uint256 i = 0; i < siblings.length; ++i) {
            node = (sides >> i) & 1 == 1
                ? keccak256(abi.encodePacked(bytes1(0x01), siblings[i], node))
                : keccak256(abi.encodePacked(bytes1(0x01), node, siblings[i]));
        }
        if (node != root) revert BadExitProof(exitId, batchNumber);
        if (exitMinted[exitId]) revert ExitAlreadyMinted(exitId);
        uint64 amount = _le64(bytes8(record[52:60]));
        address recipient = address(bytes20(record[60:80]));
        _takeFromBucket(amount);
        exitMinted[exitId] = true;
        emit ExitMinted(exitId, batchNumber, recipient, amount);
        wbtc.mint(recipient, amount);
    }

    /// @notice Stop mint and burn; guardian only.
    function pause() external {
        if (msg.sender != guardian) revert NotGuardian(msg.sender);
        if (paused) revert PauseStateUnchanged(true);
        paused = true;
        emit Paused(msg.sender);
    }

    /// @notice Resume mint and burn; owner only (a guardian key alone cannot undo its own alarm).
    function unpause() external onlyOwner {
        if (!paused) revert PauseStateUnchanged(false);
        paused = false;
        emit Unpaused(msg.sender);
    }

    /// @notice WBTC base units mintable right now under the token-bucket cap.
    function availableToMint() public view returns (uint256) {
        uint256 refilled = uint256(_bucketTokens)
            + (block.timestamp - uint256(_bucketUpdatedAt)) * uint256(mintCapRefillPerSecond);
        return refilled < mintCapCapacity ? refilled : mintCapCapacity;
    }

    /// @notice Change the mint cap; timelock only. The bucket keeps its current level, clipped to the new capacity.
    function setMintCap(uint128 capacity, uint128 refillPerSecond) external onlyTimelock {
        uint256 level = availableToMint();
        _bucketTokens = uint128(level < capacity ? level : capacity);
        _bucketUpdatedAt = uint64(block.timestamp);
        mintCapCapacity = capacity;
        mintCapRefillPerSecond = refillPerSecond;
        emit MintCapChanged(capacity, refillPerSecond);
    }

    /// @notice Replace the guardian; timelock only.
    function setGuardian(address next) external onlyTimelock {
        if (next == address(0)) revert InvalidConfiguration();
        emit GuardianChanged(guardian, next);
        guardian = next;
    }

    /// @notice Replace the payout confirmer; timelock only.
    function setPayoutConfirmer(address next) external onlyTimelock {
        if (next == address(0)) revert InvalidConfiguration();
        emit PayoutConfirmerChanged(payoutConfirmer, next);
        payoutConfirmer = next;
    }

    /// @notice Start handing ownership to `newOwner`, who must call acceptOwnership; timelock only.
    function transferOwnership(address newOwner) external onlyTimelock {
        pendingOwner = newOwner;
        emit OwnershipTransferStarted(owner, newOwner);
    }

    /// @notice Complete an ownership transfer; pending owner only.
    function acceptOwnership() external {
        if (msg.sender != pendingOwner) revert NotPendingOwner(msg.sender);
        emit OwnershipTransferred(owner, msg.sender);
        owner = msg.sender;
        pendingOwner = address(0);
    }

    /// @dev The transaction of `p` is in a block of the light client's best chain with K confirmations: the
    /// same depth and inclusion checks as a deposit's (_checkInclusion).
    function _checkDeepInclusion(TxProof calldata p) private view {
        uint256 confs = lightClient.confirmations(p.blockHash);
        if (confs == 0) revert BlockNotInBestChain(p.blockHash);
        if (confs < minConfirmations) revert InsufficientConfirmations(p.blockHash, confs, minConfirmations);
        if (p.rawTx.length == 64) revert BitcoinTx.SixtyFourByteTransaction();
        _checkInclusion(BitcoinTx.sha256d(p.rawTx), p.merkleProof, p.blockHash, p.txIndex);
        _checkDepth(p.merkleProof.length, p.coinbaseTx, p.coinbaseProof, p.blockHash);
    }

    /// @notice Queue an admin call (ABI-encoded call of setMintCap, setGuardian, setPayoutConfirmer,
    /// setAttestationVerifier or transferOwnership), executable from now + adminDelay; owner only.
    /// @return id keccak256(call).
    function queueAdminAction(bytes calldata call) external onlyOwner returns (bytes32 id) {
        bytes4 selector = call.length >= 4 ? bytes4(call[:4]) : bytes4(0);
        if (!_isTimelocked(selector)) revert NotATimelockedAction(selector);
        id = keccak256(call);
        if (adminActionEta[id] != 0) revert AdminActionAlreadyQueued(id);
        uint256 eta = block.timestamp + adminDelay;
        adminActionEta[id] = eta;
        emit AdminActionQueued(id, call, eta);
    }

    /// @notice Execute a queued admin call once its delay has passed (and before its grace period ends); owner
    /// only. A call that reverts reverts this transaction with its error, and stays queued.
    function executeAdminAction(bytes calldata call) external onlyOwner {
        bytes32 id = keccak256(call);
        uint256 eta = adminActionEta[id];
        if (eta == 0) revert AdminActionNotQueued(id);
        if (block.timestamp < eta) revert AdminActionNotReady(id, eta);
        if (block.timestamp > eta + ADMIN_GRACE_PERIOD) revert AdminActionExpired(id, eta);
        delete adminActionEta[id];
        (bool ok, bytes memory reason) = address(this).call(call);
        if (!ok) {
            assembly {
                revert(add(reason, 32), mload(reason))
            }
        }
        emit AdminActionExecuted(id, call);
    }

    /// @notice Drop a queued admin call; owner only.
    function cancelAdminAction(bytes calldata call) external onlyOwner {
        bytes32 id = keccak256(call);
        if (adminActionEta[id] == 0) revert AdminActionNotQueued(id);
        delete adminActionEta[id];
        emit AdminActionCancelled(id);
    }

    function _isTimelocked(bytes4 selector) private pure returns (bool) {
        return selector == this.setMintCap.selector || selector == this.setGuardian.selector
            || selector == this.setPayoutConfirmer.selector || selector == this.setAttestationVerifier.selector
            || selector == this.transferOwnership.selector;
    }

    function _checkInclusion(bytes32 txid, bytes32[] calldata proof, bytes32 blockHash, uint256 txIndex) private view {
        if (txIndex == 0 || (proof.length < 256 && txIndex >> proof.length != 0)) {
            revert BadTxIndex(txIndex, proof.length);
        }
        if (_rootFromBranch(txid, proof, txIndex) != lightClient.merkleRootOf(blockHash)) {
            revert BadMerkleProof(txid, blockHash);
        }
    }

    /// @dev The depth rule: the coinbase, a complete transaction (never 64 bytes, so never an inner node), proven
    /// at index 0 with a branch as long as the deposit's. Bitcoin's tree duplicates the last node of odd levels,
    /// so all leaves are at one depth; a deposit branch of another length cannot reach a real leaf.
    function _checkDepth(uint256 depth, bytes calldata coinbaseTx, bytes32[] calldata coinbaseProof, bytes32 blockHash)
        private
        view
    {
        if (coinbaseProof.length != depth) revert MerkleDepthMismatch(depth, coinbaseProof.length);
        bytes32 coinbaseTxid = BitcoinTx.coinbaseTxid(coinbaseTx);
        if (_rootFromBranch(coinbaseTxid, coinbaseProof, 0) != lightClient.merkleRootOf(blockHash)) {
            revert BadCoinbaseProof(coinbaseTxid, blockHash);
        }
    }

    function _rootFromBranch(bytes32 leaf, bytes32[] calldata proof, uint256 index) private pure returns (bytes32 h) {
        h = leaf;
        for (uint256 i = 0; i < proof.length; ++i) {
            h = index & 1 == 0
                ? sha256(abi.encodePacked(sha256(abi.encodePacked(h, proof[i]))))
                : sha256(abi.encodePacked(sha256(abi.encodePacked(proof[i], h))));
            index >>= 1;
        }
    }

    function _checkDeposit(BitcoinTx.Deposit memory d, uint256 outputIndex) private view {
        if (outputIndex >= d.outputCount) revert OutputIndexOutOfRange(outputIndex, d.outputCount);
        if (!d.selectedPaysFederation) revert NotFederationOutput(outputIndex);
        if (d.federationOutput != outputIndex) revert NotFirstFederationOutput(outputIndex, d.federationOutput);
        if (d.isCoinbase) revert CoinbaseDeposit();
        if (d.tagCount == 0) revert NoDepositTag();
        if (d.tagCount > 1) revert MultipleDepositTags(d.tagCount);
        if (d.tagStatus != BitcoinTx.TagStatus.Valid) revert MalformedDepositTag();
        if (d.kind != 2) revert NotAnEvmDeposit(d.kind);
        if (d.amount < minDepositSats) revert BelowMinimumDeposit(d.amount, minDepositSats);
    }

    function _le64(bytes8 b) private pure returns (uint64 v) {
        for (uint256 i = 0; i < 8; ++i) {
            v |= uint64(uint8(b[i])) << uint64(8 * i);
        }
    }

    function _takeFromBucket(uint64 amount) private {
        uint256 available = availableToMint();
        if (amount > available) revert MintCapExceeded(amount, available);
        _bucketTokens = uint128(available - amount);
        _bucketUpdatedAt = uint64(block.timestamp);
    }
}
