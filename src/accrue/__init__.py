"""accrue: loyalty, rewards, referral and payments platform."""
