// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title WrappedBTC
/// @notice ERC-20 wrapped bitcoin of btcl2. One base unit is one satoshi (8 decimals). Only the Bridge, fixed at
/// deployment, mints (against an SPV-proven Bitcoin deposit) and burns (for a withdrawal to Bitcoin).
contract WrappedBTC {
    /// @notice Raised when an account other than the Bridge calls mint or burn.
    error NotBridge(address caller);
    /// @notice Raised when a transfer or burn exceeds the holder's balance.
    error InsufficientBalance(address holder, uint256 balance, uint256 needed);
    /// @notice Raised when transferFrom exceeds the spender's allowance.
    error InsufficientAllowance(address spender, uint256 allowance, uint256 needed);
    /// @notice Raised when tokens would be sent to, minted to or approved for the zero address.
    error ZeroAddress();

    /// @notice ERC-20: `value` base units moved from `from` to `to` (from = 0 on mint, to = 0 on burn).
    event Transfer(address indexed from, address indexed to, uint256 value);
    /// @notice ERC-20: `owner` allowed `spender` to move up to `value` base units.
    event Approval(address indexed owner, address indexed spender, uint256 value);

    string public constant name = "btcl2 Wrapped BTC";
    string public constant symbol = "WBTC";
    uint8 public constant decimals = 8;

    /// @notice The only account allowed to mint and burn.
    address public immutable bridge;
    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    /// @param bridge_ The Bridge contract (its address is known before it is deployed: deploy.py derives it).
    constructor(address bridge_) {
        if (bridge_ == address(0)) revert ZeroAddress();
        bridge = bridge_;
    }

    modifier onlyBridge() {
        if (msg.sender != bridge) revert NotBridge(msg.sender);
        _;
    }

    /// @notice Move `value` base units from the caller to `to`.
    function transfer(address to, uint256 value) external returns (bool) {
        _transfer(msg.sender, to, value);
        return true;
    }

    /// @notice Allow `spender` to move up to `value` of the caller's base units.
    function approve(address spender, uint256 value) external returns (bool) {
        if (spender == address(0)) revert ZeroAddress();
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
        return true;
    }

    /// @notice Move `value` base units from `from` to `to` within the caller's allowance (max uint = unlimited).
    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        if (allowed != type(uint256).max) {
            if (allowed < value) revert InsufficientAllowance(msg.sender, allowed, value);
            unchecked {
                allowance[from][msg.sender] = allowed - value;
            }
        }
        _transfer(from, to, value);
        return true;
    }

    /// @notice Create `value` base units for `to`; Bridge only, after it verified a deposit.
    function mint(address to, uint256 value) external onlyBridge {
        if (to == address(0)) revert ZeroAddress();
        totalSupply += value;
        unchecked {
            // Cannot overflow: no balance exceeds totalSupply, which was just checked.
            balanceOf[to] += value;
        }
        emit Transfer(address(0), to, value);
    }

    /// @notice Destroy `value` of `from`'s base units; Bridge only, when `from` asks it for a withdrawal.
    function burn(address from, uint256 value) external onlyBridge {
        uint256 balance = balanceOf[from];
        if (balance < value) revert InsufficientBalance(from, balance, value);
        unchecked {
            balanceOf[from] = balance - value;
            totalSupply -= value;
        }
        emit Transfer(from, address(0), value);
    }

    function _transfer(address from, address to, uint256 value) private {
        if (to == address(0)) revert ZeroAddress();
        uint256 balance = balanceOf[from];
        if (balance < value) revert InsufficientBalance(from, balance, value);
        unchecked {
            balanceOf[from] = balance - value;
            balanceOf[to] += value;
        }
        emit Transfer(from, to, value);
    }
}
