// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title FakeBridge
/// @notice Test only: emits events with exactly the Bridge's signatures, so tests can check that event readers
/// trust only the deployed Bridge's address.
contract FakeBridge {
    event Minted(bytes32 indexed btcTxid, uint32 vout, address indexed recipient, uint64 amount, bytes32 indexed blockHash);
    event WithdrawalRequested(bytes32 indexed id, address indexed from, uint64 amount, bytes script, uint256 nonce);

    /// @notice Emit a Minted event that mints nothing.
    function fakeMint(bytes32 btcTxid, uint32 vout, address recipient, uint64 amount, bytes32 blockHash) external {
        emit Minted(btcTxid, vout, recipient, amount, blockHash);
    }

    /// @notice Emit a WithdrawalRequested event that burns nothing.
    function fakeWithdrawal(bytes32 id, uint64 amount, bytes calldata script) external {
        emit WithdrawalRequested(id, msg.sender, amount, script, 0);
    }
}
